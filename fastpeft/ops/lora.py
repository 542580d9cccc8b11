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
where one must be stored (the PyTorch path off the CPU); it is empty wherever the mask is
regenerated from `seed` (Triton, and the CPU path through fastpeft._C). One custom-op
boundary per patched module call, with explicit fake and autograd rules so the ops pass
torch.library.opcheck and compile with fullgraph=True.
"""

import torch

from . import _counters, _dropout_torch, lora_torch

_EMPTY = (0,)


def _triton_impl():
    # Imported lazily: importing fastpeft must not import or compile Triton kernels.
    from . import lora_triton

    return lora_triton


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
    if backend == "triton":
        y, t = _triton_impl().forward(x, weight, bias, lora_a, lora_b, seed, scaling, dropout_p)
        return y, t, x.new_empty(_EMPTY, dtype=torch.bool)
    return lora_torch.forward(x, weight, bias, lora_a, lora_b, seed, scaling, dropout_p)


@lora_linear_fwd.register_fake
def _(x, weight, bias, lora_a, lora_b, seed, scaling, dropout_p, backend):
    M, N, R = x.shape[0], weight.shape[0], lora_a.shape[0]
    y = x.new_empty((M, N))
    t = x.new_empty((M, R), dtype=lora_a.dtype)
    keep_shape = _EMPTY
    if backend == "torch" and dropout_p > 0 and not _dropout_torch.counter_based(x.device):
        keep_shape = tuple(x.shape)
    return y, t, x.new_empty(keep_shape, dtype=torch.bool)


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
    if backend == "triton":
        dx, da, db = _triton_impl().backward(
            dy, x, weight, lora_a, lora_b, t, seed, scaling, dropout_p, need_dx
        )
    else:
        dx, da, db = lora_torch.backward(
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


def dropout_keep_mask(seed: torch.Tensor, shape: tuple[int, int], p: float, backend: str):
    """The bool keep-mask `backend` derives from `seed` for an input of `shape` (for tests)."""
    if backend == "triton":
        return _triton_impl().dropout_keep_mask(seed, shape[0], shape[1], p)
    return _dropout_torch.keep_mask(torch.empty(shape, device=seed.device), p, seed)
