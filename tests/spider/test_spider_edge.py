"""Spider edge cases against the float64 reference on synthetic gradient streams: constant and
all-zero tensors, 1-element and 0-d tensors, all-zero gradients, gradients that are None, fp16 and
bf16 parameters, several chunks per tensor; no NaN; determinism."""

import pytest
import torch
from torch import nn

from fastpeft import testing
from fastpeft.reference.spider import SpiderReference, importance
from fastpeft.spider import Spider

from .helpers import CPU_BACKENDS, grad_stream, synthetic_run

STEPS = 4


def edge_params(dtype=torch.float32) -> list[nn.Parameter]:
    """Parameters covering the edge cases (names in the comments)."""
    g = torch.Generator().manual_seed(5)
    values = [
        torch.randn(7, 5, generator=g),  # ordinary
        torch.ones(16),  # constant θ₀ (a norm weight): I_pre = 0.5 everywhere
        torch.zeros(6),  # all-zero θ₀ (a zero-initialised bias): I_pre = 0
        torch.randn(1, generator=g),  # 1 element: std := 0
        torch.randn((), generator=g),  # 0-d
        torch.randn(9, generator=g),  # gets all-zero gradients
        torch.randn(4, 3, generator=g),  # gradient None in some steps
        torch.randn(8, generator=g),  # constant gradients: I_ft = 0.5
        torch.randn(90, 100, generator=g),  # several Triton chunks (4096 elements each)
    ]
    return [nn.Parameter(v.to(dtype)) for v in values]


def edge_grads(params, steps=STEPS, seed=0):
    grads = grad_stream([p.shape for p in params], steps, seed=seed)
    for step, gs in enumerate(grads):
        gs[5] = torch.zeros_like(gs[5])
        if step % 2 == 1:
            gs[6] = None
        gs[7] = torch.full_like(gs[7], 0.3)
    return grads


def run(backend, dtype, steps=STEPS):
    params = edge_params(dtype)
    if backend == "reference":
        spider = SpiderReference(params, dtype=torch.float64)
    else:
        spider = Spider(params, backend=backend)
    synthetic_run(params, spider, edge_grads(params, steps))
    return [p.detach().clone() for p in params], spider


@pytest.fixture(scope="module")
def reference_fp32():
    return run("reference", torch.float32)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_edge_cases_fp32(backend, reference_fp32):
    got, spider = run(backend, torch.float32)
    ref, _ = reference_fp32
    for i, (a, e) in enumerate(zip(got, ref, strict=True)):
        assert torch.isfinite(a).all(), f"param {i} has non-finite values"
        testing.assert_close_fp32(a, e, rtol=1e-6, name=f"param {i}")
    assert all(t.dtype == torch.float32 for t in spider.G)
    assert not spider.G[5].any()  # all-zero gradients: G stays zero ...
    stats = spider.stats()
    assert stats["5"] == {"selected": 0.0, "mean_c": 0.0}  # ... and nothing is selected
    # Constant G: I_ft = 0.5, so exactly the elements with I_pre < 0.5 are selected.
    i_pre = importance(spider.theta0[7].double())
    assert stats["7"]["selected"] == pytest.approx((i_pre < 0.5).double().mean().item())
    assert 0.0 < stats["0"]["selected"] < 1.0
    assert stats["2"]["selected"] == 1.0  # I_pre = 0 < I_ft wherever G != 0


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_grad_none_leaves_parameter_and_G_alone(backend):
    params = edge_params()
    spider = Spider(params, backend=backend)
    grads = edge_grads(params, steps=1)
    synthetic_run(params, spider, grads)
    before = [p.detach().clone() for p in params]
    G_before = [g.clone() for g in spider.G]
    for p in params:
        p.grad = None
    params[0].grad = torch.randn(params[0].shape)
    spider.step()
    for i in range(1, len(params)):
        assert torch.equal(params[i], before[i]) and torch.equal(spider.G[i], G_before[i])
    assert not torch.equal(spider.G[0], G_before[0])


@pytest.mark.parametrize(
    "backend,dtype",
    [
        ("torch", torch.float16),
        ("torch", torch.bfloat16),
        ("cpp", torch.float16),
        ("cpp", torch.bfloat16),
        # The Triton interpreter truncates fp32 -> bf16 conversions (SPEC §7): fp16 only here.
        ("triton", torch.float16),
    ],
    ids=str,
)
def test_half_precision_parameters(backend, dtype):
    got, spider = run(backend, dtype)
    ref, _ = run("reference", dtype)
    assert all(t.dtype == dtype for t in spider.theta0)
    assert all(t.dtype == torch.float32 for t in spider.G)
    eps = torch.finfo(dtype).eps
    for i, (a, e) in enumerate(zip(got, ref, strict=True)):
        assert a.dtype == dtype and torch.isfinite(a).all()
        # float32 vs float64 blend arithmetic may round differently once per step: 2 ulp.
        testing.assert_close_fp32(a, e, rtol=2 * eps, name=f"param {i} ({dtype})")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_repeatable(backend):
    a, _ = run(backend, torch.float32, steps=2)
    b, _ = run(backend, torch.float32, steps=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_cpp_bitwise_independent_of_threads():
    saved = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            torch.manual_seed(0)  # 140K elements: three 64K-element chunks
            params = [nn.Parameter(torch.randn(140_000)), nn.Parameter(torch.randn(70, 3))]
            spider = Spider(params, backend="cpp")
            synthetic_run(params, spider, grad_stream([p.shape for p in params], 3, seed=1))
            results.append([p.detach().clone() for p in params] + [g.clone() for g in spider.G])
    finally:
        torch.set_num_threads(saved)
    for other in results[1:]:
        assert all(torch.equal(x, y) for x, y in zip(results[0], other, strict=True))


def test_float64_parameters_keep_their_precision():
    params = [nn.Parameter(torch.randn(50, dtype=torch.float64))]
    ref_params = [nn.Parameter(params[0].detach().clone())]
    spider = Spider(params, backend="cpp")
    ref = SpiderReference(ref_params, dtype=torch.float64)
    grads = grad_stream([(50,)], 3, seed=2)
    synthetic_run(params, spider, grads)
    synthetic_run(ref_params, ref, grads)
    # c is computed in float32 (1e-7 relative), but the blend itself runs in float64.
    testing.assert_close_fp32(params[0], ref_params[0], rtol=1e-6)
    assert not torch.equal(params[0], params[0].float().double())


def test_errors():
    with pytest.raises(ValueError, match="no trainable parameters"):
        Spider([nn.Parameter(torch.ones(3), requires_grad=False)])
    with pytest.raises(ValueError, match="backend must be one of"):
        Spider([nn.Parameter(torch.ones(3))], backend="fast")
    with pytest.raises(ValueError, match="must be contiguous"):
        Spider([("w", nn.Parameter(torch.ones(4, 3).t()))])
    with pytest.raises(RuntimeError, match="runs on cuda tensors, not cpu"):
        Spider([nn.Parameter(torch.ones(3))], backend="cuda")
