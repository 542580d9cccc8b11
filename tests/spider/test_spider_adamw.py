"""SpiderAdamW against AdamW followed by Spider.step(), computed in float64 (torch.optim.AdamW in
float64 and the literal SpiderReference in float64), on the edge-case parameters of
test_spider_edge with two param groups and an LR schedule; the fused pass is proven to run.

Tolerance (fastpeft/tolerance.py's rule): the stock fp32/fp16/bf16 computation (torch's AdamW then
Spider, same backend) is the baseline; SpiderAdamW's largest element error against the float64
run may be at most 3x the baseline's plus 8 ulps of the largest value. Both differ from float64
by roundings of the same elementwise chain (AdamW's update, then the blend), and SpiderAdamW
rounds w once where the baseline rounds it twice, so a correct fused pass sits at or below the
baseline; a wrong hyper-parameter, moment or blend moves elements by lr-sized amounts, far past
it. Selection (I_pre < I_ft) depends on θ₀ and G only, which every run shares bit for bit up to
G's float32 sums, so the runs select the same elements.
"""

import pytest
import torch
from torch import nn

from fastpeft import testing
from fastpeft.ops import _counters
from fastpeft.reference.spider import SpiderReference
from fastpeft.spider import Spider, SpiderAdamW

from .helpers import CPU_BACKENDS
from .test_spider_edge import edge_grads, edge_params

STEPS = 4
HYPER = dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)


def groups(params: list[nn.Parameter]) -> list[dict]:
    """Two param groups with their own lr and weight decay."""
    return [{"params": params[:5]}, {"params": params[5:], "lr": 1e-2, "weight_decay": 0.0}]


def run(kind: str, backend: str, dtype: torch.dtype) -> list[torch.Tensor]:
    """STEPS steps of `kind` ("fused": SpiderAdamW; "stock": AdamW + Spider; "fp64": AdamW +
    SpiderReference in float64 on the same θ₀ and gradients, upcast) under a LambdaLR schedule."""
    params = edge_params(dtype)
    grads = edge_grads(params, STEPS)
    if kind == "fp64":
        params = [nn.Parameter(p.detach().double()) for p in params]
    if kind == "fused":
        opt = SpiderAdamW(groups(params), **HYPER, backend=backend)
        spider = None
    else:
        opt = torch.optim.AdamW(groups(params), **HYPER, foreach=False)
        spider = (
            SpiderReference(params, dtype=torch.float64)
            if kind == "fp64"
            else Spider(params, backend=backend)
        )
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            # The gradients every run sees are those of the tested dtype.
            p.grad = None if g is None else g.to(dtype).to(p.dtype)
        opt.step()
        if spider is not None:
            spider.step()
        schedule.step()
    return [p.detach().clone() for p in params]


CASES = [(b, torch.float32) for b in CPU_BACKENDS] + [
    ("torch", torch.float16),
    ("torch", torch.bfloat16),
    ("cpp", torch.float16),
    ("cpp", torch.bfloat16),
    # The Triton interpreter truncates fp32 -> bf16 conversions (SPEC §7): fp16 only here.
    ("triton", torch.float16),
]


@pytest.mark.parametrize("backend,dtype", CASES, ids=str)
def test_matches_float64_adamw_then_spider(backend, dtype):
    _counters.reset()
    got = run("fused", backend, dtype)
    assert _counters.launches[f"spider_adamw:{backend}"] == STEPS  # the fused pass ran
    baseline = run("stock", backend, dtype)
    reference = run("fp64", backend, dtype)
    for i, (a, b, e) in enumerate(zip(got, baseline, reference, strict=True)):
        assert a.dtype == dtype and torch.isfinite(a).all()
        testing.assert_within_reference_budget(a, b, e, name=f"param {i} ({backend}, {dtype})")


def test_backends_agree_and_select_alike():
    """The CPU backends give the same parameters up to float32 rounding, elements pinned to θ₀
    included (c = 0 gives θ₀ exactly)."""
    runs = {b: run("fused", b, torch.float32) for b in CPU_BACKENDS}
    theta0 = edge_params(torch.float32)
    for b in CPU_BACKENDS[1:]:
        for i, (x, y) in enumerate(zip(runs[CPU_BACKENDS[0]], runs[b], strict=True)):
            testing.assert_close_fp32(x, y, rtol=1e-6, name=f"param {i} {b}")
    pinned = [r == t.detach() for r, t in zip(runs["cpp"], theta0, strict=True)]
    assert 0 < sum(int(m.sum()) for m in pinned) < sum(m.numel() for m in pinned)


def test_zero_weight_decay_and_no_selection_is_plain_adamw():
    """A tensor whose G selects nothing (all-zero gradients: I_ft = 0) gets AdamW's update
    alone, equal to torch.optim.AdamW's within float32 rounding."""
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(50))
    b = nn.Parameter(a.detach().clone())
    fused = SpiderAdamW([a], lr=0.1, weight_decay=0.5, backend="cpp")
    stock = torch.optim.AdamW([b], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        a.grad, b.grad = torch.zeros(50), torch.zeros(50)
        fused.step()
        stock.step()
    assert not torch.equal(a, torch.zeros(50))
    testing.assert_close_fp32(a, b, rtol=1e-6)
    assert fused.spider.stats()["0.0"]["selected"] == 0.0


def test_float64_parameters_keep_their_precision():
    torch.manual_seed(1)
    p = nn.Parameter(torch.randn(40, dtype=torch.float64))
    q = nn.Parameter(p.detach().clone())
    fused = SpiderAdamW([p], lr=0.05, backend="cpp")
    stock, spider = torch.optim.AdamW([q], lr=0.05), SpiderReference([q], dtype=torch.float64)
    for _ in range(3):
        g = torch.randn(40, dtype=torch.float64)
        p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        stock.step()
        spider.step()
    # AdamW and the blend run in float64; only c is float32 (1e-7 relative).
    testing.assert_close_fp32(p, q, rtol=1e-6)
    assert not torch.equal(p, p.float().double())


def test_no_gradient_changes_nothing():
    params = edge_params()
    opt = SpiderAdamW(params, backend="cpp")
    before = [p.detach().clone() for p in params]
    assert opt.step() is None
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert opt.spider.steps == 0 and not opt.state


def test_closure_is_called_with_gradients_enabled():
    w = nn.Parameter(torch.randn(6))

    def closure():
        assert torch.is_grad_enabled()
        loss = (w * w).sum()
        loss.backward()
        return loss

    opt = SpiderAdamW([w], backend="cpp")
    loss = opt.step(closure)
    assert float(loss) > 0 and opt.spider.steps == 1
