"""MagnitudeMaskAdamW against AdamW followed by MagnitudeMask.step(), computed in float64, on the
edge-case parameters of test_spider_edge with two param groups and an LR schedule; the fused
pass is proven to run.

Tolerance as for SpiderAdamW (fastpeft/tolerance.py's rule): the stock computation (torch's
AdamW, then MagnitudeMask) in the tested dtype is the baseline; the fused pass's largest element
error against the float64 run may be at most 3x the baseline's plus 8 ulps of the largest value.
Pinned elements must equal θ₀ bit for bit, in every run.
"""

import copy

import pytest
import torch
from torch import nn

from fastpeft import testing
from fastpeft.ops import _counters
from fastpeft.spider import MagnitudeMask, MagnitudeMaskAdamW

from .test_spider_adamw import HYPER, STEPS, groups
from .test_spider_edge import edge_grads, edge_params

RATIO = 0.4


def run(kind: str, backend: str, dtype: torch.dtype, steps: int = STEPS):
    """(parameters, optimizer) after `steps` steps of `kind` ("fused": MagnitudeMaskAdamW;
    "stock": AdamW + MagnitudeMask; "fp64": the same in float64 on the upcast θ₀ and gradients)
    under a LambdaLR schedule."""
    params = edge_params(dtype)
    grads = edge_grads(params, steps)
    if kind == "fp64":
        params = [nn.Parameter(p.detach().double()) for p in params]
    if kind == "fused":
        opt = MagnitudeMaskAdamW(groups(params), ratio=RATIO, **HYPER, backend=backend)
        mask = None
    else:
        opt = torch.optim.AdamW(groups(params), **HYPER, foreach=False)
        mask = MagnitudeMask(params, ratio=RATIO)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = None if g is None else g.to(dtype).to(p.dtype)
        opt.step()
        if mask is not None:
            mask.step()
        schedule.step()
    return [p.detach().clone() for p in params], opt


CASES = [
    ("torch", torch.float32),
    ("torch", torch.float16),
    ("torch", torch.bfloat16),
    ("cpp", torch.float32),
    ("cpp", torch.float16),
    ("cpp", torch.bfloat16),
    ("cpp", torch.float64),
    ("triton", torch.float32),
    # The Triton interpreter truncates fp32 -> bf16 conversions (SPEC §7): fp16 only here.
    ("triton", torch.float16),
]


@pytest.mark.parametrize("backend,dtype", CASES, ids=str)
def test_matches_float64_adamw_then_magnitude_mask(backend, dtype):
    _counters.reset()
    got, opt = run("fused", backend, dtype)
    assert _counters.launches[f"masked_adamw:{backend}"] == STEPS  # the fused pass ran
    baseline, _ = run("stock", backend, dtype)
    reference, _ = run("fp64", backend, dtype)
    for i, (a, b, e) in enumerate(zip(got, baseline, reference, strict=True)):
        assert a.dtype == dtype and torch.isfinite(a).all()
        testing.assert_within_reference_budget(a, b, e, name=f"param {i} ({backend}, {dtype})")
    # Pinned elements are θ₀ exactly; the others of a trained tensor moved.
    for p, t0, pin in zip(got, opt.mask.theta0, opt.mask.masks, strict=True):
        assert torch.equal(p[pin], t0[pin])
    assert sum(int(k.sum()) for k in opt.mask.masks) > 0
    assert not torch.equal(got[0][~opt.mask.masks[0]], opt.mask.theta0[0][~opt.mask.masks[0]])


def test_backends_agree():
    torch_run, _ = run("fused", "torch", torch.float32)
    triton_run, _ = run("fused", "triton", torch.float32)
    for i, (x, y) in enumerate(zip(torch_run, triton_run, strict=True)):
        testing.assert_close_fp32(x, y, rtol=1e-6, name=f"param {i}")


def _steps(opt, params, grads) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g
        opt.step()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_resume_from_state_dict_is_exact(backend):
    """Two steps, a state dict through a copy, two more steps on a fresh optimizer over fresh
    parameters: bit for bit the four-step run."""
    whole = edge_params()
    grads = edge_grads(whole, 4)
    _steps(MagnitudeMaskAdamW(groups(whole), ratio=RATIO, **HYPER, backend=backend), whole, grads)
    params = edge_params()
    opt = MagnitudeMaskAdamW(groups(params), ratio=RATIO, **HYPER, backend=backend)
    _steps(opt, params, grads[:2])
    saved = copy.deepcopy(opt.state_dict())
    fresh = [nn.Parameter(torch.randn_like(p)) for p in params]  # θ₀ taken from other values
    resumed = MagnitudeMaskAdamW(groups(fresh), ratio=RATIO, **HYPER, backend=backend)
    resumed.load_state_dict(saved)
    with torch.no_grad():
        for p, w in zip(fresh, params, strict=True):
            p.copy_(w)
    _steps(resumed, fresh, grads[2:])
    for i, (a, b) in enumerate(zip(fresh, whole, strict=True)):
        assert torch.equal(a.detach(), b.detach()), i
    assert resumed.mask.steps == 4


def test_arguments_and_state_errors():
    params = edge_params()
    with pytest.raises(ValueError, match="backend must be one of"):
        MagnitudeMaskAdamW(params, backend="cuda")
    with pytest.raises(ValueError, match="amsgrad=True is not supported"):
        MagnitudeMaskAdamW(params, amsgrad=True)
    with pytest.raises(ValueError, match="ratio must be in"):
        MagnitudeMaskAdamW(params, ratio=1.5)
    opt = MagnitudeMaskAdamW(params)
    with pytest.raises(RuntimeError, match="cannot be added after construction"):
        opt.add_param_group({"params": [nn.Parameter(torch.randn(3))]})
    state = opt.state_dict()
    state.pop("mask")
    with pytest.raises(ValueError, match="no 'mask' entry"):
        opt.load_state_dict(state)


def test_no_gradient_changes_nothing():
    params = edge_params()
    opt = MagnitudeMaskAdamW(params)
    before = [p.detach().clone() for p in params]
    assert opt.step() is None
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert opt.mask.steps == 0 and not opt.state
