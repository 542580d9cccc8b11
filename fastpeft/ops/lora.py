"""Fused LoRA linear as torch.library custom ops.

Forward (frozen W [N, K], b [N]; trainable A [R, K], B [N, R]; x [M, K]):

    t = drop(x) Aᵀ                  (x cast to the adapter dtype, as PEFT does)
    y = x Wᵀ + b + s · t Bᵀ

Backward (W and b frozen, so no dW or db):

    u  = s · dy B                   [M, R]
    dB = s · dyᵀ t                  [N, R]
    dA = uᵀ drop(x)                 [R, K]   (same dropout mask as the forward)
    dx = dy W + drop'(u A)          [M, K]   drop' multiplies by the mask and 1 / (1 - p)

`lora_linear_fwd` returns (y, t, keep): t is saved for the backward; keep is the dropout mask
where one is stored (bool on the PyTorch path off the CPU; 1 bit per element, as uint8, on
the Triton path unless FASTPEFT_DROPOUT_MASK=regenerate); it is empty wherever the mask is
regenerated from `seed` (the CPU path through fastpeft._C, and Triton's "regenerate").
`backend` names the implementation the dispatcher chose (fastpeft/dispatch.py); every
implementation has the same signatures and outputs. One custom-op boundary per patched module
call, with explicit fake and autograd rules so the ops pass torch.library.opcheck and compile
with fullgraph=True.
"""

import torch

from .. import dispatch
from . import _counters

_EMPTY = (0,)


@torch.library.custom_op("fastpeft::lora_linear_fwd", mutates_args=())
def lora_linear_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    seed: torch.Tensor | None,
    scaling: float,
    dropout_p: float,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _counters.record("lora_fwd", backend)
    impl = dispatch.implementation("lora", backend)
    return impl.forward(x, weight, bias, lora_a, lora_b, seed, scaling, dropout_p)


@lora_linear_fwd.register_fake
def _(x, weight, bias, lora_a, lora_b, seed, scaling, dropout_p, backend):
    M, N, R = x.shape[0], weight.shape[0], lora_a.shape[0]
    keep_shape, keep_dtype = dispatch.implementation("lora", backend).mask_spec(x, dropout_p)
    y = x.new_empty((M, N))
    t = x.new_empty((M, R), dtype=lora_a.dtype)
    return y, t, x.new_empty(keep_shape, dtype=keep_dtype)


@torch.library.custom_op("fastpeft::lora_linear_bwd", mutates_args=())
def lora_linear_bwd(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    t: torch.Tensor,
    keep: torch.Tensor,
    seed: torch.Tensor | None,
    scaling: float,
    dropout_p: float,
    backend: str,
    need_dx: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dA, dB); dx is an empty tensor when need_dx is False."""
    _counters.record("lora_bwd", backend)
    dx, da, db = dispatch.implementation("lora", backend).backward(
        dy, x, weight, lora_a, lora_b, t, keep, seed, scaling, dropout_p, need_dx
    )
    return (dx if dx is not None else x.new_empty(_EMPTY)), da, db


@lora_linear_bwd.register_fake
def _(dy, x, weight, lora_a, lora_b, t, keep, seed, scaling, dropout_p, backend, need_dx):
    dx = x.new_empty(x.shape if need_dx else _EMPTY)
    return dx, torch.empty_like(lora_a), torch.empty_like(lora_b)


def _setup_context(ctx, inputs, output):
    x, weight, _bias, lora_a, lora_b, seed, scaling, dropout_p, backend = inputs
    _y, t, keep = output
    ctx.save_for_backward(x, weight, lora_a, lora_b, t, keep, seed)
    ctx.scaling, ctx.dropout_p, ctx.backend = scaling, dropout_p, backend
    ctx.mark_non_differentiable(t, keep)


def _backward(ctx, dy, _dt, _dkeep):
    x, weight, lora_a, lora_b, t, keep, seed = ctx.saved_tensors
    need_dx, need_da, need_db = ctx.needs_input_grad[0], *ctx.needs_input_grad[3:5]
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        raise RuntimeError("fastpeft LoRA: the base weight and bias must be frozen")
    dx, da, db = lora_linear_bwd(
        dy, x, weight, lora_a, lora_b, t, keep, seed,
        ctx.scaling, ctx.dropout_p, ctx.backend, need_dx,
    )  # fmt: skip
    return (
        dx if need_dx else None,
        None,
        None,
        da if need_da else None,
        db if need_db else None,
        None,
        None,
        None,
        None,
    )


lora_linear_fwd.register_autograd(_backward, setup_context=_setup_context)
