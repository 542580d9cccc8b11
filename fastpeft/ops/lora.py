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
with fullgraph=True. Eager calls take `EagerLoRALinear` / `EagerLoRALinearUp` instead: the same
implementation without the ops' dispatch cost (as fastpeft/ops/ia3.py's EagerIA3Linear).
"""

import torch

from .. import dispatch
from . import _counters

_EMPTY = (0,)


def _run_forward(x, weight, bias, lora_a, lora_b, seed, scaling, dropout_p, backend):
    """(y, t, keep): the implementation `backend` names, counted."""
    _counters.record("lora_fwd", backend)
    impl = dispatch.implementation("lora", backend)
    return impl.forward(x, weight, bias, lora_a, lora_b, seed, scaling, dropout_p)


def _run_backward(dy, x, weight, lora_a, lora_b, t, keep, seed, scaling, dropout_p, backend,
                  need_dx):  # fmt: skip
    """(dx or None, dA, dB): the implementation `backend` names, counted."""
    _counters.record("lora_bwd", backend)
    return dispatch.implementation("lora", backend).backward(
        dy, x, weight, lora_a, lora_b, t, keep, seed, scaling, dropout_p, need_dx
    )


def _run_up(x, weight, bias, lora_b, t, scaling, backend):
    """y = x Wᵀ + b + s · t Bᵀ: the implementation `backend` names, counted."""
    _counters.record("lora_up", backend)
    return dispatch.implementation("lora", backend).forward_up(x, weight, bias, lora_b, t, scaling)


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
    return _run_forward(x, weight, bias, lora_a, lora_b, seed, scaling, dropout_p, backend)


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
    dx, da, db = _run_backward(dy, x, weight, lora_a, lora_b, t, keep, seed, scaling, dropout_p,
                               backend, need_dx)  # fmt: skip
    return (dx if dx is not None else x.new_empty(_EMPTY)), da, db


@lora_linear_bwd.register_fake
def _(dy, x, weight, lora_a, lora_b, t, keep, seed, scaling, dropout_p, backend, need_dx):
    dx = x.new_empty(x.shape if need_dx else _EMPTY)
    return dx, torch.empty_like(lora_a), torch.empty_like(lora_b)


def _save(ctx, x, weight, lora_a, lora_b, t, keep, seed, scaling, dropout_p, backend):
    ctx.save_for_backward(x, weight, lora_a, lora_b, t, keep, seed)
    ctx.scaling, ctx.dropout_p, ctx.backend = scaling, dropout_p, backend


def _grads(ctx, dy, backward) -> tuple:
    """(dx, None, None, dA, dB) for the inputs (x, weight, bias, lora_a, lora_b) both forward
    ops start with; None where no gradient is needed. `backward` runs the gradients: the
    lora_linear_bwd op (what a graph holds), or `_run_backward` for the eager Functions."""
    x, weight, lora_a, lora_b, t, keep, seed = ctx.saved_tensors
    need_dx, need_da, need_db = ctx.needs_input_grad[0], *ctx.needs_input_grad[3:5]
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        raise RuntimeError("fastpeft LoRA: the base weight and bias must be frozen")
    dx, da, db = backward(
        dy, x, weight, lora_a, lora_b, t, keep, seed,
        ctx.scaling, ctx.dropout_p, ctx.backend, need_dx,
    )  # fmt: skip
    return dx if need_dx else None, None, None, da if need_da else None, db if need_db else None


def _setup_context(ctx, inputs, output):
    x, weight, _bias, lora_a, lora_b, seed, scaling, dropout_p, backend = inputs
    _y, t, keep = output
    _save(ctx, x, weight, lora_a, lora_b, t, keep, seed, scaling, dropout_p, backend)
    ctx.mark_non_differentiable(t, keep)


def _backward(ctx, dy, _dt, _dkeep):
    return (*_grads(ctx, dy, lora_linear_bwd), None, None, None, None)


lora_linear_fwd.register_autograd(_backward, setup_context=_setup_context)


# Shared-input LoRA: adapters of one rank and dtype on the same x (q/k/v, gate/up) get their
# down-projections from one launch that reads x once (`lora_shared_down`, no gradient of its own:
# x and the A factors enter it detached), then each its own `lora_linear_up`, whose backward is
# the plain op's, from its t, mask and seed.


@torch.library.custom_op("fastpeft::lora_shared_down", mutates_args=())
def lora_shared_down(
    x: torch.Tensor,
    lora_as: list[torch.Tensor],
    seeds: list[torch.Tensor],
    dropout_p: float,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(t [M, members, R], keep): member g's t = drop_g(x) A_gᵀ at t[:, g] and its mask's bits
    at keep[g] (empty where the backward draws the masks again from `seeds`)."""
    _counters.record("lora_shared_down", backend)
    impl = dispatch.implementation("lora", backend)
    return impl.shared_down(x, list(lora_as), list(seeds), dropout_p)


@lora_shared_down.register_fake
def _(x, lora_as, seeds, dropout_p, backend):
    members, R = len(lora_as), lora_as[0].shape[0]
    keep_shape, keep_dtype = dispatch.implementation("lora", backend).mask_spec(x, dropout_p)
    if len(keep_shape) == 2:
        keep_shape = (members, *keep_shape)
    t = x.new_empty((x.shape[0], members, R), dtype=lora_as[0].dtype)
    return t, x.new_empty(keep_shape, dtype=keep_dtype)


@torch.library.custom_op("fastpeft::lora_linear_up", mutates_args=())
def lora_linear_up(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    t: torch.Tensor,
    keep: torch.Tensor,
    seed: torch.Tensor | None,
    scaling: float,
    dropout_p: float,
    backend: str,
) -> torch.Tensor:
    """y = x Wᵀ + b + s · t Bᵀ for the t (and mask) `lora_shared_down` computed; lora_a, keep and
    seed are there for the backward (dA, and dx's rank-r term through the same mask)."""
    return _run_up(x, weight, bias, lora_b, t, scaling, backend)


@lora_linear_up.register_fake
def _(x, weight, bias, lora_a, lora_b, t, keep, seed, scaling, dropout_p, backend):
    return x.new_empty((x.shape[0], weight.shape[0]))


def _setup_up(ctx, inputs, output):
    x, weight, _bias, lora_a, lora_b, t, keep, seed, scaling, dropout_p, backend = inputs
    _save(ctx, x, weight, lora_a, lora_b, t, keep, seed, scaling, dropout_p, backend)


def _backward_up(ctx, dy):
    return (*_grads(ctx, dy, lora_linear_bwd), None, None, None, None, None, None)


lora_linear_up.register_autograd(_backward_up, setup_context=_setup_up)


class EagerLoRALinear(torch.autograd.Function):
    """`lora_linear_fwd` and its backward for eager calls: the same implementation, counted
    alike, without the custom ops' dispatcher round trips and autograd registration (about 70
    µs of host time per forward on this project's 2-core VM, as much as PEFT's whole layer at a
    tiny shape: NOTES.md). torch.compile needs the ops, which `fastpeft.functional.lora_linear`
    uses while compiling. `apply` takes the op's arguments and returns y."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, seed, scaling, dropout_p, backend):
        y, t, keep = _run_forward(x, weight, bias, lora_a, lora_b, seed, scaling, dropout_p,
                                  backend)  # fmt: skip
        _save(ctx, x, weight, lora_a, lora_b, t, keep, seed, scaling, dropout_p, backend)
        return y

    @staticmethod
    def backward(ctx, dy):
        return (*_grads(ctx, dy, _run_backward), None, None, None, None)


class EagerLoRALinearUp(torch.autograd.Function):
    """`lora_linear_up` and its backward for eager calls (as EagerLoRALinear)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, t, keep, seed, scaling, dropout_p, backend):
        _save(ctx, x, weight, lora_a, lora_b, t, keep, seed, scaling, dropout_p, backend)
        return _run_up(x, weight, bias, lora_b, t, scaling, backend)

    @staticmethod
    def backward(ctx, dy):
        return (*_grads(ctx, dy, _run_backward), None, None, None, None, None, None)
