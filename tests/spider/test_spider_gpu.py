"""GPU tier (marker `gpu`, skipped without CUDA): the Triton kernels and the CUDA extension's
multi-tensor launcher against the float64 reference, bf16 included; no host synchronisation
inside step(); a launch count that does not grow with the number of tensors (Triton)."""

import pytest
import torch
from torch import nn

from fastpeft import _ext
from fastpeft.reference.spider import SpiderReference
from fastpeft.spider import Spider

from .helpers import grad_stream, synthetic_run

pytestmark = pytest.mark.gpu

GPU_BACKENDS = ["triton", "cuda", "torch"]


def _need(backend: str) -> None:
    if backend == "cuda" and not (_ext.available() and _ext.require().has_cuda()):
        pytest.skip("fastpeft._C was built without CUDA kernels")


def many_params(dtype, n: int = 150, seed: int = 0, offset: int = 0) -> list[nn.Parameter]:
    """More tensors than one CUDA launch's table holds (64 segments), sizes 0 .. 200K, plus a
    constant, a zero and a 1-element tensor. offset > 0 makes each a view that starts `offset`
    elements into its own buffer, so it is not 16-byte aligned."""
    g = torch.Generator().manual_seed(seed)
    sizes = [0, 1, 65_536, 65_537, 200_003] + torch.randint(1, 5000, (n - 5,), generator=g).tolist()
    values = [torch.randn(s, generator=g) for s in sizes]
    values[5] = torch.ones(sizes[5])
    values[6] = torch.zeros(sizes[6])
    params = []
    for v in values:
        buffer = torch.zeros(offset + v.numel(), dtype=dtype, device="cuda")
        buffer[offset:] = v.to(dtype)
        params.append(nn.Parameter(buffer[offset:]))
    return params


def _cuda_grads(params, steps, seed=0):
    return [
        [g.cuda() for g in step] for step in grad_stream([p.shape for p in params], steps, seed)
    ]


def assert_close_but_ties(actual, expected, rtol, name, max_fraction=1e-4):
    """Elementwise |a - e| <= rtol * max|e|, except a tiny fraction of elements: where I_pre and
    I_ft agree to a few float32 ulps, the approximate GPU exp/divide may decide I_pre < I_ft
    differently from the float64 reference (a legitimate tie, not an error)."""
    a, e = actual.double().flatten(), expected.double().flatten()
    assert torch.isfinite(a).all(), f"{name}: non-finite values"
    if e.numel() == 0:
        return
    bad = (a - e).abs() > rtol * e.abs().max().clamp_min(1e-30)
    assert int(bad.sum()) <= max(1, int(max_fraction * e.numel())), (
        f"{name}: {int(bad.sum())}/{e.numel()} elements beyond rtol {rtol:g}"
    )


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "unaligned"])
def test_many_tensors_match_reference(backend, dtype, offset):
    """Aligned tensors take the 16-byte vector loads; views one element in take the scalar loops
    (the kernels check every pointer's alignment)."""
    _need(backend)
    params = many_params(dtype, offset=offset)
    assert all((p.data_ptr() % 16 == 0) == (offset == 0) for p in params if p.numel() > 1)
    ref_params = [nn.Parameter(p.detach().clone()) for p in params]
    spider = Spider(params, backend=backend)
    assert spider.backends == [backend]
    reference = SpiderReference(ref_params, dtype=torch.float64)
    grads = _cuda_grads(params, 3)
    synthetic_run(params, spider, grads)
    synthetic_run(ref_params, reference, grads)
    eps = 1e-6 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps
    for i, (a, e) in enumerate(zip(params, ref_params, strict=True)):
        assert_close_but_ties(a.detach(), e.detach(), eps, f"param {i} {dtype}")


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_deterministic_and_no_host_sync(backend):
    _need(backend)
    runs = []
    for _ in range(2):
        params = many_params(torch.bfloat16, n=40)
        spider = Spider(params, backend=backend)
        grads = _cuda_grads(params, 3)
        synthetic_run(params, spider, grads[:1])  # first step builds plans and tables
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            synthetic_run(params, spider, grads[1:])
        finally:
            torch.cuda.set_sync_debug_mode(0)
        runs.append([p.detach().clone() for p in params] + [g.clone() for g in spider.G])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def _kernels_per_step(backend: str, n: int) -> int:
    params = many_params(torch.bfloat16, n=n)
    spider = Spider(params, backend=backend)
    for p in params:
        p.grad = torch.randn_like(p)
    spider.step()  # warm-up: plans, tables, Triton compilation
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        spider.step()
        torch.cuda.synchronize()
    return sum(
        1
        for ev in prof.events()
        if ev.device_type == torch.autograd.DeviceType.CUDA and "memcpy" not in ev.name.lower()
    )


def test_triton_launches_do_not_grow_with_tensor_count():
    # accumulate + finalize, select + finalize, blend (plus the small torch ops that allocate).
    assert _kernels_per_step("triton", 20) == _kernels_per_step("triton", 200)


def test_cuda_launches_grow_only_with_the_table_size():
    _need("cuda")
    # 64 segments per pass launch, 128 rows per finalize launch.
    assert _kernels_per_step("cuda", 200) <= 3 * 4 + 2 * 2


def test_follows_the_model_to_the_gpu():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    spider = Spider(model)
    assert spider.backends == ["cpp"]
    model.cuda()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    spider.step()
    assert all(t.is_cuda for t in spider.theta0 + spider.G)
    assert spider.backends[0] in ("cuda", "triton")
