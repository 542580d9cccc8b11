"""MagnitudeMask against its literal reference (fastpeft.reference.spider)."""

import copy

import pytest
import torch
from torch import nn

from fastpeft import testing
from fastpeft.reference.spider import MagnitudeMaskReference, magnitude_mask
from fastpeft.spider import MagnitudeMask, top_magnitude_mask

from .helpers import partial_llava, train


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_mask_matches_reference_with_ties(ratio, dtype):
    g = torch.Generator().manual_seed(0)
    # Few distinct magnitudes (and signs): many ties at the threshold.
    t = (torch.randint(-4, 5, (13, 11), generator=g) * 0.25).to(dtype)
    mask = top_magnitude_mask(t, ratio)
    assert torch.equal(mask, magnitude_mask(t, ratio))
    assert int(mask.sum()) == int(ratio * t.numel())


def test_mask_on_random_values():
    t = torch.randn(1000)
    assert torch.equal(top_magnitude_mask(t, 0.5), magnitude_mask(t, 0.5))
    assert top_magnitude_mask(torch.randn(()), 0.5).shape == ()


def test_llava_matches_reference():
    model = partial_llava()
    batches = [testing.llava_batch(model, batch_size=2, seq_len=12, seed=s) for s in range(2)]
    ref, _ = train(copy.deepcopy(model), batches, lambda m: MagnitudeMaskReference(m), 3)
    got, mask = train(copy.deepcopy(model), batches, lambda m: MagnitudeMask(m), 3)
    for name, a, e in zip(mask.names, got, ref, strict=True):
        assert torch.equal(a, e), name
    # The pinned half really is at θ₀, the rest moved.
    for p, t0, m in zip(got, mask.theta0, mask.masks, strict=True):
        assert torch.equal(p[m], t0[m])
        if p.numel() > 8:
            assert not torch.equal(p[~m], t0[~m])


def test_grad_none_skipped_and_state_roundtrip():
    a, b = nn.Parameter(torch.randn(10)), nn.Parameter(torch.randn(6))
    mask = MagnitudeMask([a, b], ratio=0.5)
    with torch.no_grad():
        a.add_(1.0)
        b.add_(1.0)
    a.grad = torch.ones(10)
    mask.step()
    assert torch.equal(a[mask.masks[0]], mask.theta0[0][mask.masks[0]])
    assert not torch.equal(b[mask.masks[1]], mask.theta0[1][mask.masks[1]])  # no grad: skipped
    state = copy.deepcopy(mask.state_dict())
    other = MagnitudeMask([nn.Parameter(torch.randn(10)), nn.Parameter(torch.randn(6))])
    other.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(other.masks, mask.masks, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(other.theta0, mask.theta0, strict=True))
    with pytest.raises(ValueError, match="ratio must be in"):
        MagnitudeMask([a], ratio=1.5)
