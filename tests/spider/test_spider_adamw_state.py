"""SpiderAdamW's state and arguments: resuming from state_dict equals an uninterrupted run bit for
bit; the state dict is AdamW's plus Spider's; bad arguments raise errors naming them."""

import copy

import pytest
import torch
from torch import nn

from fastpeft import _ext
from fastpeft.spider import SpiderAdamW

from .test_spider_state import data, mlp, roundtrip
from .test_spider_state import train as spider_train


def train(model, opt, schedule, steps: range) -> None:
    # Spider's loop calls its third argument's step() after the optimizer's: here the schedule's.
    spider_train(model, opt, schedule, steps)


def make(model, backend):
    opt = SpiderAdamW(model.named_parameters(), lr=3e-2, weight_decay=0.05, backend=backend)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


@pytest.mark.parametrize("backend", ["cpp", "torch", "triton"])
def test_resume_equals_uninterrupted(backend):
    model = mlp(0)
    opt, schedule = make(model, backend)
    train(model, opt, schedule, range(3))
    saved = roundtrip(
        {"model": model.state_dict(), "opt": opt.state_dict(), "lr": schedule.state_dict()}
    )
    train(model, opt, schedule, range(3, 7))

    fresh = mlp(1)  # different initial values: everything must come from the checkpoint
    fresh.load_state_dict(saved["model"])
    fresh_opt, fresh_schedule = make(fresh, backend)
    fresh_opt.load_state_dict(saved["opt"])
    fresh_schedule.load_state_dict(saved["lr"])
    assert fresh_opt.spider.steps == 3
    train(fresh, fresh_opt, fresh_schedule, range(3, 7))
    for (name, a), b in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resume"
    for a, b in zip(opt.spider.G, fresh_opt.spider.G, strict=True):
        assert torch.equal(a, b)


def test_state_dict_is_adamw_plus_spider():
    model = mlp(0)
    opt, _ = make(model, "cpp")
    x, y = data(0)
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    state = opt.state_dict()
    names = [n for n, _ in model.named_parameters()]
    assert state["param_groups"][0]["param_names"] == names
    first = state["state"][0]
    assert set(first) == {"step", "exp_avg", "exp_avg_sq"} and float(first["step"]) == 1.0
    assert first["exp_avg"].dtype == torch.float32
    assert state["spider"]["format"] == "fastpeft.spider/1"
    assert state["spider"]["names"] == names
    assert all(g.dtype == torch.float32 for g in state["spider"]["G"])
    plain = torch.optim.AdamW(model.parameters()).state_dict()
    with pytest.raises(ValueError, match="no 'spider' entry"):
        opt.load_state_dict(plain)
    bad = copy.deepcopy(state)
    bad["spider"]["G"][0] = torch.zeros(2)
    with pytest.raises(ValueError, match="saved shape"):
        opt.load_state_dict(bad)


def one_param():
    return [nn.Parameter(torch.ones(3))]


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(lr=-1.0), ValueError, "lr must be a float >= 0"),
        (dict(lr=torch.tensor(1e-3)), TypeError, "lr must be a Python float"),
        (dict(betas=(0.9, 1.0)), ValueError, "betas must be two floats in"),
        (dict(betas=0.9), ValueError, "betas must be two floats in"),
        (dict(eps=-1e-8), ValueError, "eps must be a float >= 0"),
        (dict(weight_decay=-0.1), ValueError, "weight_decay must be a float >= 0"),
        (dict(amsgrad=True), ValueError, "amsgrad=True is not supported"),
        (dict(maximize=True), ValueError, "maximize=True is not supported"),
        (dict(backend="fast"), ValueError, "backend must be one of"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SpiderAdamW(one_param(), **kwargs)


def test_bad_use():
    params = one_param()
    opt = SpiderAdamW(params, backend="cpp")
    with pytest.raises(RuntimeError, match="cannot be added after construction"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))]})
    params[0].grad = torch.ones(3)
    opt.param_groups[0]["lr"] = torch.tensor(0.1)  # as a scheduler writing a tensor would
    with pytest.raises(TypeError, match="param group: lr must be a Python float"):
        opt.step()
    with pytest.raises(ValueError, match="must be contiguous"):
        SpiderAdamW([nn.Parameter(torch.ones(4, 3).t())])
    emb = nn.Embedding(5, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        SpiderAdamW(emb.parameters()).step()


@pytest.mark.skipif(not _ext.available(), reason="fastpeft._C is not built")
def test_extension_checks_name_the_argument():
    C = _ext.require()
    w = [torch.ones(4), torch.ones(3)]
    G = [torch.zeros(4), torch.zeros(3)]
    pre = ft = torch.zeros(2, 3, dtype=torch.float64)
    sel = torch.zeros(2, 2, dtype=torch.float64)
    hyper = torch.zeros(2, 6, dtype=torch.float64)

    def call(**over):
        args = dict(w=w, grads=w, exp_avg=w, exp_avg_sq=w, theta0=w, G=G, hyper=hyper)
        args.update(moments_pre=pre, moments_ft=ft, select_sums=sel)
        args.update(over)
        C.spider_adamw_blend_(**args)

    with pytest.raises(ValueError, match="exp_avg has 1 tensors but w has 2"):
        call(exp_avg=w[:1])
    with pytest.raises(ValueError, match=r"w\[1\] is Float but exp_avg_sq\[1\] is Half"):
        call(exp_avg_sq=[w[0], w[1].half()])
    shape = r"hyper must be a contiguous float64 tensor of shape \[2, 6\]"
    with pytest.raises(ValueError, match=shape):
        call(hyper=torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"G\[0\] must be float32"):
        call(G=[g.double() for g in G])
    with pytest.raises(ValueError, match=r"w\[0\] has 4 elements but grads\[0\] has 5"):
        call(grads=[torch.ones(5), torch.ones(3)])


@pytest.mark.skipif(not _ext.available(), reason="fastpeft._C is not built")
def test_kept_c_raw_is_what_the_fused_pass_would_compute():
    """The CPU passes keep c_raw from pass 2 for the fused pass: the kept values are the ones the
    pass would compute, so reading them changes no bit of the result."""
    from fastpeft.torch_path import importance as torch_impl

    C = _ext.require()
    torch.manual_seed(3)
    theta0 = [torch.randn(3000), torch.randn(7, 5)]
    G = [torch.randn(3000), torch.randn(7, 5)]
    pre = C.abs_moments(theta0)
    ft = C.abs_moments(G)
    kept = [torch.full_like(g, float("nan")) for g in G]
    sel = C.spider_select_sums(theta0, G, pre, ft, c_out=kept)
    assert torch.equal(sel, C.spider_select_sums(theta0, G, pre, ft))
    stats = torch_impl.r_stats(pre), torch_impl.r_stats(ft)
    for i, (t0, g) in enumerate(zip(theta0, G, strict=True)):
        c, _ = torch_impl.c_raw(t0, g, *stats, i)
        torch.testing.assert_close(kept[i], c, rtol=4e-7, atol=0)  # the same formula, 1-3 ulps
    hyper = torch.tensor([[0.999, 1e-2, 0.9, 0.999, 1e-8, 0.1]] * 2, dtype=torch.float64)

    def fused(c_raw):
        w = [t.clone() + 0.01 for t in theta0]
        m, v = [torch.full_like(t, 0.1) for t in w], [torch.full_like(t, 0.2) for t in w]
        grads = [torch.ones_like(t) for t in w]
        C.spider_adamw_blend_(w, grads, m, v, theta0, G, hyper, pre, ft, sel, c_raw=c_raw)
        return w + m + v

    assert all(torch.equal(a, b) for a, b in zip(fused(kept), fused([]), strict=True))
    with pytest.raises(ValueError, match=r"c_out has 1 tensors but G has 2"):
        C.spider_select_sums(theta0, G, pre, ft, c_out=kept[:1])
