"""Spider state: resuming from state_dict continues exactly like an uninterrupted run."""

import copy
import io

import pytest
import torch
from torch import nn

from fastpeft.spider import Spider


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), nn.GELU(), nn.LayerNorm(24), nn.Linear(24, 5))


def data(step: int):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 12, generator=g), torch.randn(16, 5, generator=g)


def train(model, opt, spider, steps: range) -> None:
    for step in steps:
        x, y = data(step)
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        spider.step()
        opt.zero_grad()


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_resume_equals_uninterrupted(backend):
    model = mlp(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    spider = Spider(model, backend=backend)
    train(model, opt, spider, range(3))
    saved = roundtrip(
        {"model": model.state_dict(), "opt": opt.state_dict(), "spider": spider.state_dict()}
    )
    train(model, opt, spider, range(3, 7))

    def resume(load_spider: bool) -> nn.Module:
        fresh = mlp(1)  # different initial values: everything must come from the checkpoint
        fresh.load_state_dict(saved["model"])
        fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=3e-2)
        fresh_opt.load_state_dict(saved["opt"])
        fresh_spider = Spider(fresh, backend=backend)
        if load_spider:
            fresh_spider.load_state_dict(saved["spider"])
            assert fresh_spider.steps == 3
        train(fresh, fresh_opt, fresh_spider, range(3, 7))
        return fresh

    resumed = resume(load_spider=True)
    for (name, a), b in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resume"
    # The paper code's behaviour (θ₀ silently redefined on resume) gives a different run.
    redefined = resume(load_spider=False)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.parameters(), redefined.parameters(), strict=True)
    )


def test_state_dict_contents_and_errors():
    model = mlp(0)
    spider = Spider(model)
    state = spider.state_dict()
    assert state["names"] == [n for n, _ in model.named_parameters()]
    assert len(state["theta0"]) == len(state["G"]) == len(state["names"])
    assert state["moments_pre"].shape == (len(state["names"]), 3)
    assert state["moments_pre"].dtype == torch.float64
    other = Spider(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="differ from the tracked ones"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="not a Spider state dict"):
        spider.load_state_dict({"format": "something else"})
    bad = copy.deepcopy(state)
    bad["G"][0] = torch.zeros(2)
    with pytest.raises(ValueError, match="saved shape"):
        spider.load_state_dict(bad)
