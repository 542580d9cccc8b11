"""The dropout keep-mask the fused LoRA and adapter ops share (functional.dropout_keep_mask)."""

import pytest
import torch

from fastpeft import functional

BACKENDS = ["triton", "torch"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_mask_statistics(backend, device):
    p, shape = 0.3, (96, 80)
    masks = [
        functional.dropout_keep_mask(torch.tensor([s], device=device), shape, p, backend=backend)
        for s in (1, 1, 2)
    ]
    assert torch.equal(masks[0], masks[1]), "same seed must give the same mask"
    assert not torch.equal(masks[0], masks[2]), "different seeds must give different masks"
    kept = masks[0].float().mean().item()
    sigma = (p * (1 - p) / masks[0].numel()) ** 0.5
    assert abs(kept - (1 - p)) < 5 * sigma, f"kept fraction {kept:.4f}, expected {1 - p}"
    # No structure along rows or columns (a broken counter would repeat rows).
    assert not torch.equal(masks[0][0], masks[0][1])
    assert not torch.equal(masks[0][:, 0], masks[0][:, 1])
    # Two independent masks agree on p² + (1 - p)² of the elements; a shared one on all.
    agree = (masks[0] == masks[2]).float().mean().item()
    assert abs(agree - (p * p + (1 - p) ** 2)) < 10 * sigma
