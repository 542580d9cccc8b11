"""The two ways the Triton adapter kernels carry the dropout masks to the backward, as for LoRA:
1 bit per element stored by the forward ("bits", the default) or drawn again from the seeds
("regenerate"). The same masks either way, so the same numbers, single adapter and pair."""

import pytest
import torch

from fastpeft.ops import adapter as ops

from .adapter_cases import (
    keep_mask,
    make_inputs,
    make_pair_inputs,
    pair_keep_masks,
    run_op,
    run_pair_op,
)
from .test_lora_mask_modes import unpack

M, D, H, P = 70, 80, 24, 0.3  # D no multiple of 32: the last byte of a row is partly used


@pytest.mark.parametrize("residual", [False, True])
def test_single_adapter_stores_its_mask_and_both_modes_agree(device, monkeypatch, residual):
    seed = torch.tensor([77], device=device)
    monkeypatch.setenv("FASTPEFT_DROPOUT_MASK", "bits")
    inputs = make_inputs(M, D, H, torch.float32, torch.float32, device, residual=residual)
    z, w_down, w_up, res, _ = inputs
    _, _, keep = ops.adapter_fwd(z, w_down, w_up, res, seed, 1.5, P, "tanh", "triton")
    assert keep.dtype == torch.uint8 and keep.shape == (1, M, 10)
    expected = keep_mask("triton", seed, (M, D), P)
    assert torch.equal(unpack(keep[0], D), expected)
    stored = run_op(inputs, 1.5, "tanh", P, "triton", seed)
    monkeypatch.setenv("FASTPEFT_DROPOUT_MASK", "regenerate")
    inputs = make_inputs(M, D, H, torch.float32, torch.float32, device, residual=residual)
    drawn = run_op(inputs, 1.5, "tanh", P, "triton", seed)
    for s, d in zip(stored, drawn, strict=True):
        assert (s is None and d is None) or torch.equal(s, d)
    assert stored[2].abs().sum() > 0  # dW_down through the mask


def test_pair_stores_two_independent_masks_and_both_modes_agree(device, monkeypatch):
    seed = torch.tensor([5, 6], device=device)
    monkeypatch.setenv("FASTPEFT_DROPOUT_MASK", "bits")
    inputs = make_pair_inputs(M, D, H, torch.float32, torch.float32, device)
    _, _, _, keep = ops.adapter_pair_fwd(*inputs[:5], seed, 1.0, P, "silu", "triton")
    assert keep.shape == (2, M, 10)
    first, second = pair_keep_masks("triton", seed, (M, D), P)
    assert torch.equal(unpack(keep[0], D), first) and torch.equal(unpack(keep[1], D), second)
    assert not torch.equal(first, second)
    stored = run_pair_op(inputs, 1.0, "silu", P, "triton", seed)
    monkeypatch.setenv("FASTPEFT_DROPOUT_MASK", "regenerate")
    drawn = run_pair_op(make_pair_inputs(M, D, H, torch.float32, torch.float32, device), 1.0,
                        "silu", P, "triton", seed)  # fmt: skip
    for s, d in zip(stored, drawn, strict=True):
        assert torch.equal(s, d)
