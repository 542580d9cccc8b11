"""fastpeft._C counter-based dropout (the CPU LoRA path's dropout)."""

import pytest
import torch

from fastpeft import _C


def test_mask_is_reproducible_and_has_the_right_rate():
    p, rows, cols = 0.3, 257, 301
    mask = _C.dropout_keep_mask(7, rows, cols, p)
    assert mask.dtype == torch.bool and mask.shape == (rows, cols)
    assert torch.equal(mask, _C.dropout_keep_mask(7, rows, cols, p))
    assert not torch.equal(mask, _C.dropout_keep_mask(8, rows, cols, p))
    sigma = (p * (1 - p) / mask.numel()) ** 0.5
    assert abs(mask.float().mean().item() - (1 - p)) < 5 * sigma
    # Rows and columns are not copies of each other, and row keys do not repeat.
    assert not torch.equal(mask[0], mask[1])
    assert not torch.equal(mask[:, 0], mask[:, 1])
    rates = mask.float().mean(dim=1)
    assert rates.std() > 0


def test_p_zero_keeps_everything():
    assert _C.dropout_keep_mask(1, 9, 11, 0.0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dropout_applies_the_mask_in_place(dtype):
    x = torch.randn(65, 47).to(dtype)
    want = (x.float() * _C.dropout_keep_mask(123, 65, 47, 0.25) * (1 / 0.75)).to(dtype)
    out = _C.dropout_(x, 123, 0.25)
    assert out.data_ptr() == x.data_ptr()
    assert torch.equal(x, want)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        _C.dropout_(torch.ones(2, 2), 0, 1.0)
    with pytest.raises(ValueError, match="must be 2-D"):
        _C.dropout_(torch.ones(8), 0, 0.1)
    with pytest.raises(ValueError, match="must be contiguous"):
        _C.dropout_(torch.ones(4, 4).t(), 0, 0.1)
    # Checked before the GIL is released (an error raised without it crashed on a CUDA torch).
    with pytest.raises(ValueError, match="must be float32/float16/bfloat16/float64, got Int"):
        _C.dropout_(torch.ones(4, 4, dtype=torch.int32), 0, 0.1)
