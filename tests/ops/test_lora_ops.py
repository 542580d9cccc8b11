"""Fused LoRA ops (Triton and PyTorch paths) against the literal PEFT reference."""

from functools import partial

import pytest
import torch

import fastpeft
from fastpeft.ops import _counters
from fastpeft.tolerance import assert_matches_reference

from .lora_cases import keep_mask, make_inputs, run_op, run_reference
from .op_checks import check_within_budget

BACKENDS = ["triton", "hybrid", "torch"]
# M, K, N not multiples of the blocks; r in {1, 8, 16}.
SHAPES = [(70, 45, 38, 1), (33, 64, 96, 8), (50, 40, 70, 16)]
NAMES = ("y", "dx", "dA", "dB")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("p", [0.0, 0.25])
def test_fp32_matches_reference(backend, shape, p, device):
    inputs = make_inputs(*shape, torch.float32, torch.float32, device, bias=shape[3] != 8)
    seed = torch.tensor([97 + shape[0]], device=device)
    _counters.reset()
    got = run_op(inputs, 1.75, p, backend, seed)
    assert _counters.launches[f"lora_fwd:{backend}"] == 1
    assert _counters.launches[f"lora_bwd:{backend}"] == 1
    keep = keep_mask(backend, seed, shape[:2], p)
    assert_matches_reference(got, partial(run_reference, inputs, 1.75, keep, p), NAMES, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("adapter_dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("p", [0.0, 0.25])
def test_fp16_base_within_dtype_budget(backend, adapter_dtype, p, device):
    # fp32 adapters on a 16-bit base is PEFT's default regime (bf16 is tested on the GPU tier:
    # the interpreter cannot do bf16 arithmetic).
    shape = (70, 45, 38, 8)
    inputs = make_inputs(*shape, torch.float16, adapter_dtype, device)
    seed = torch.tensor([5], device=device)
    got = run_op(inputs, 2.0, p, backend, seed)
    keep = keep_mask(backend, seed, shape[:2], p)
    ref32 = run_reference(inputs, 2.0, keep, p, dtype=torch.float32)
    ref16 = run_reference(inputs, 2.0, keep, p)
    check_within_budget(got, ref32, ref16, NAMES, fp32_rtol=1e-4, label=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.0, 0.25])
@pytest.mark.parametrize("x_grad", [True, False], ids=["dx", "no-dx"])
def test_eager_calls_take_the_light_function_with_the_ops_numbers(backend, p, x_grad, device):
    # Eager fastpeft.lora_linear runs the implementation through EagerLoRALinear (not the custom
    # ops' dispatcher round trips): the same numbers and counters as the ops, bit for bit, with
    # the same seed drawn from torch's generator.
    inputs = make_inputs(70, 45, 38, 8, torch.float32, torch.float32, device, x_grad=x_grad)
    x, weight, b, lora_a, lora_b, dy = inputs
    torch.manual_seed(3)
    _counters.reset()
    y = fastpeft.lora_linear(x, weight, b, lora_a, lora_b, 1.75, p, backend=backend)
    assert type(y.grad_fn).__name__ == "EagerLoRALinearBackward"
    y.backward(dy)
    got = (y.detach(), x.grad, lora_a.grad, lora_b.grad)
    assert _counters.launches[f"lora_fwd:{backend}"] == 1
    assert _counters.launches[f"lora_bwd:{backend}"] == 1
    x.grad, lora_a.grad, lora_b.grad = None, None, None
    torch.manual_seed(3)
    seed = torch.randint(0, 2**31 - 1, (1,), device=device, dtype=torch.int64) if p else None
    want = run_op(inputs, 1.75, p, backend, seed)
    assert (got[1] is None) == (not x_grad)
    for g, w in zip(got, want, strict=True):
        assert (g is None and w is None) or torch.equal(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_input_grad_skips_dx(backend, device):
    inputs = make_inputs(40, 36, 34, 4, torch.float32, torch.float32, device, x_grad=False)
    got = run_op(inputs, 0.5, 0.0, backend, None)
    assert got[1] is None
    assert_matches_reference(got, partial(run_reference, inputs, 0.5, None, 0.0), NAMES, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_input(backend, device):
    inputs = list(make_inputs(40, 36, 34, 4, torch.float32, torch.float32, device))
    wide = torch.randn(40, 72, device=device)
    inputs[0] = wide[:, ::2].detach().requires_grad_()
    x_contig = inputs[0].detach().contiguous().requires_grad_()
    got = run_op(inputs, 0.5, 0.0, backend, None)
    inputs[0] = x_contig
    assert_matches_reference(got, partial(run_reference, inputs, 0.5, None, 0.0), NAMES, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_gradient_uses_forward_mask(backend, device):
    # With p > 0, the op's outputs and gradients must be consistent with ONE mask (the forward's);
    # a backward that drew a fresh mask would fail the dA/dx comparison.
    shape = (64, 48, 40, 8)
    inputs = make_inputs(*shape, torch.float32, torch.float32, device)
    seed = torch.tensor([31337], device=device)
    got = run_op(inputs, 1.0, 0.5, backend, seed)
    other = keep_mask(backend, torch.tensor([31338], device=device), shape[:2], 0.5)
    want_wrong = run_reference(inputs, 1.0, other, 0.5)
    assert not torch.allclose(got[2], want_wrong[2], rtol=1e-3, atol=1e-3)
