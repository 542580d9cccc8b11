"""The two ways the Triton LoRA path carries the dropout mask to the backward: 1 bit per element
stored by the forward ("bits", the default) or drawn again from the seed ("regenerate")."""

import pytest
import torch

from fastpeft import env
from fastpeft.ops import lora as lora_ops
from fastpeft.triton_path import lora as triton_lora

M, K, N, R, P = 70, 80, 48, 8, 0.3  # K is no multiple of 32: the last word is partly used


def unpack(stored: torch.Tensor, K: int) -> torch.Tensor:
    """The [M, K] bool mask of [M, ceil(K / 8)] uint8 (column 8 g + j is bit j of byte g)."""
    shifts = torch.arange(8, device=stored.device, dtype=torch.int32)
    bits = (stored.to(torch.int32)[:, :, None] >> shifts) & 1
    return bits.reshape(stored.shape[0], -1)[:, :K].bool()


def _inputs(device):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(M, K, generator=g).to(device)
    w = (torch.randn(N, K, generator=g) / K**0.5).to(device)
    a = (torch.randn(R, K, generator=g) / K**0.5).to(device).requires_grad_()
    b = torch.randn(N, R, generator=g).to(device).requires_grad_()  # non-zero B: dA is not 0
    return x.requires_grad_(), w, a, b, torch.tensor([1234], device=device)


def _train_step(device):
    x, w, a, b, seed = _inputs(device)
    y, _t, _keep = lora_ops.lora_linear_fwd(x, w, None, a, b, seed, 1.5, P, "triton")
    dy = torch.randn(M, N, generator=torch.Generator().manual_seed(6)).to(device)
    y.backward(dy)
    return y.detach(), x.grad, a.grad, b.grad


def test_forward_stores_the_seeds_mask_as_bits(device, monkeypatch):
    monkeypatch.setenv("FASTPEFT_DROPOUT_MASK", "bits")
    x, w, a, b, seed = _inputs(device)
    _y, _t, keep = triton_lora.forward(x.detach(), w, None, a.detach(), b.detach(), seed, 1.5, P)
    assert keep.dtype == torch.uint8 and keep.shape == (M, 10)
    expected = triton_lora.keep_mask(seed, M, K, P)
    assert torch.equal(unpack(keep, K), expected)
    # The stored mask is not trivial: about 1 - p of it is kept.
    assert abs(expected.float().mean().item() - (1 - P)) < 0.05


def test_bits_and_regenerate_give_the_same_numbers(device, monkeypatch):
    monkeypatch.setenv("FASTPEFT_DROPOUT_MASK", "bits")
    stored = _train_step(device)
    monkeypatch.setenv("FASTPEFT_DROPOUT_MASK", "regenerate")
    _x, _w, _a, _b, seed = _inputs(device)
    assert triton_lora.mask_spec(_x, P)[0] == (0,)
    drawn = _train_step(device)
    for name, s, d in zip(("y", "dx", "dA", "dB"), stored, drawn, strict=True):
        assert torch.equal(s, d), f"{name} differs between the two mask modes"
    assert stored[2].abs().sum() > 0


def test_without_dropout_nothing_is_stored(device, monkeypatch):
    monkeypatch.setenv("FASTPEFT_DROPOUT_MASK", "bits")
    x, w, a, b, seed = _inputs(device)
    _y, _t, keep = triton_lora.forward(x.detach(), w, None, a.detach(), b.detach(), None, 1.5, 0.0)
    assert keep.numel() == 0


def test_bad_mode_names_the_variable(monkeypatch):
    monkeypatch.setenv("FASTPEFT_DROPOUT_MASK", "bytes")
    with pytest.raises(ValueError, match="FASTPEFT_DROPOUT_MASK"):
        env.dropout_mask_mode()
