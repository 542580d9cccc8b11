"""GPU tier (marker `gpu`, skipped without CUDA): the fused optimizers' GPU passes on many
tensors of every dtype, bf16 included (which the Triton interpreter cannot compute), against the
same optimizer's PyTorch pass on the same GPU. Both compute AdamW in float32 and round w once, so
they agree to one rounding of the parameter dtype (SpiderAdamW: except where I_pre and I_ft tie to
a few ulps, see test_spider_gpu); MagnitudeMaskAdamW's pinned elements are θ₀ exactly."""

import pytest
import torch
from torch import nn

from fastpeft.ops import _counters
from fastpeft.spider import MagnitudeMaskAdamW, SpiderAdamW

from .test_spider_gpu import _cuda_grads, _need, assert_close_but_ties, many_params

pytestmark = pytest.mark.gpu

STEPS = 3
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _tolerance(dtype: torch.dtype) -> float:
    # One rounding of w apart at most (float32: a few ulps of the update's arithmetic order).
    return 1e-6 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps


def _run(opt, params, grads) -> None:
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.to(p.dtype)
        opt.step()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_magnitude_mask_adamw_triton_matches_its_torch_pass(dtype):
    params = many_params(dtype)
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    fused = MagnitudeMaskAdamW(params, ratio=0.3, lr=2e-2, weight_decay=0.1)
    assert fused.backend_for(params[0].device, dtype) == "triton"
    plain = MagnitudeMaskAdamW(twins, ratio=0.3, lr=2e-2, weight_decay=0.1, backend="torch")
    grads = _cuda_grads(params, STEPS)
    _counters.reset()
    _run(fused, params, grads)
    assert _counters.launches["masked_adamw:triton"] == STEPS
    _run(plain, twins, grads)
    for i, (a, e) in enumerate(zip(params, twins, strict=True)):
        assert_close_but_ties(a.detach(), e.detach(), _tolerance(dtype), f"param {i}", 0.0)
        pin = fused.mask.masks[i]
        assert torch.equal(a.detach()[pin], fused.mask.theta0[i][pin]), i


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "unaligned"])
def test_spider_adamw_gpu_pass_matches_its_torch_pass(backend, dtype, offset):
    """offset 1: parameters one element into their buffers take the scalar loops."""
    _need(backend)
    params = many_params(dtype, offset=offset)
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    fused = SpiderAdamW(params, lr=2e-2, weight_decay=0.1, backend=backend)
    assert fused.backends == [backend]
    plain = SpiderAdamW(twins, lr=2e-2, weight_decay=0.1, backend="torch")
    grads = _cuda_grads(params, STEPS)
    _run(fused, params, grads)
    _run(plain, twins, grads)
    for i, (a, e) in enumerate(zip(params, twins, strict=True)):
        assert_close_but_ties(a.detach(), e.detach(), _tolerance(dtype), f"param {i} {dtype}")
