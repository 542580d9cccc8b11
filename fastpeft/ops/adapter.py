"""Fused bottleneck adapters (SPEC §3) as torch.library custom ops (wrappers: fastpeft.functional).

Forward (z [M, d]; trainable W_down [H, d], W_up [d, H]; s = scaling):

    pre = drop(z) W_downᵀ              [M, H]   (z cast to the adapter dtype; the only saved tensor)
    out = residual + s · act(pre) W_upᵀ          (residual = z, or a separate tensor)

Backward:

    g       = s · (dy W_up) ⊙ act'(pre)          [M, H]
    dW_up   = s · dyᵀ act(pre)                   [d, H]
    dW_down = gᵀ drop(z)                         [H, d]   (the forward's dropout mask)
    dz      = drop'(g W_down) (+ dy if residual is z)     drop' multiplies by mask / (1 - p)
    d_residual = dy

A pair (`adapter_pair`) is two adapters on one x, u = x + A1(x) and v = x + A2(x), with independent
dropout masks (seed[0], seed[1]); dx = du + dv + drop1'(g1 W_down1) + drop2'(g2 W_down2).

The forward ops return (outputs..., pre, keep): keep is the dropout mask where one is stored (bool
on the PyTorch path off the CPU; 1 bit per element, as uint8, on the Triton path unless
FASTPEFT_DROPOUT_MASK=regenerate) and empty wherever it is drawn again from `seed` (the CPU path
through fastpeft._C, and Triton's "regenerate"). `backend` names the implementation the
dispatcher chose; all share one signature. One custom-op boundary per call, with explicit fake and
autograd rules so the ops pass torch.library.opcheck and compile with fullgraph=True. Eager calls
take `EagerAdapter` / `EagerAdapterPair` instead: the same implementation without the ops'
dispatch cost (as fastpeft/ops/lora.py's EagerLoRALinear).
"""

import torch

from .. import dispatch
from . import _counters

_EMPTY = (0,)


def _impl(backend: str):
    # A single adapter and a pair share one implementation module per backend.
    return dispatch.implementation("adapter", backend)


def _keep_like(z: torch.Tensor, count: int, p: float, backend: str) -> torch.Tensor:
    shape, dtype = _impl(backend).mask_spec(z, p, count)
    return z.new_empty(shape, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# One adapter
# ------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastpeft::adapter_fwd", mutates_args=())
def adapter_fwd(
    z: torch.Tensor,
    w_down: torch.Tensor,
    w_up: torch.Tensor,
    residual: torch.Tensor | None,
    seed: torch.Tensor | None,
    scaling: float,
    dropout_p: float,
    activation: str,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, pre, keep) for 2-D z; residual None means z."""
    return _run_forward(z, w_down, w_up, residual, seed, scaling, dropout_p, activation, backend)


def _run_forward(z, w_down, w_up, residual, seed, scaling, dropout_p, activation, backend):
    """(out, pre, keep): the implementation `backend` names, counted."""
    _counters.record("adapter_fwd", backend)
    impl = _impl(backend)
    return impl.forward(z, w_down, w_up, residual, seed, scaling, dropout_p, activation)


@adapter_fwd.register_fake
def _(z, w_down, w_up, residual, seed, scaling, dropout_p, activation, backend):
    out = z.new_empty(z.shape, dtype=(z if residual is None else residual).dtype)
    pre = z.new_empty((z.shape[0], w_down.shape[0]), dtype=w_down.dtype)
    return out, pre, _keep_like(z, 1, dropout_p, backend)


@torch.library.custom_op("fastpeft::adapter_bwd", mutates_args=())
def adapter_bwd(
    dy: torch.Tensor,
    z: torch.Tensor,
    w_down: torch.Tensor,
    w_up: torch.Tensor,
    pre: torch.Tensor,
    keep: torch.Tensor,
    seed: torch.Tensor | None,
    scaling: float,
    dropout_p: float,
    activation: str,
    backend: str,
    residual_is_z: bool,
    need_dz: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dz, dW_down, dW_up); dz holds dy too when residual_is_z, and is empty unless need_dz."""
    dz, dwd, dwu = _run_backward(dy, z, w_down, w_up, pre, keep, seed, scaling, dropout_p,
                                 activation, backend, residual_is_z, need_dz)  # fmt: skip
    return (dz if dz is not None else z.new_empty(_EMPTY)), dwd, dwu


def _run_backward(dy, z, w_down, w_up, pre, keep, seed, scaling, dropout_p, activation, backend,
                  residual_is_z, need_dz):  # fmt: skip
    """(dz or None, dW_down, dW_up): the implementation `backend` names, counted."""
    _counters.record("adapter_bwd", backend)
    args = (scaling, dropout_p, activation, residual_is_z, need_dz)
    return _impl(backend).backward(dy, z, w_down, w_up, pre, keep, seed, *args)


@adapter_bwd.register_fake
def _(dy, z, w_down, w_up, pre, keep, seed, scaling, dropout_p, activation, backend, res_is_z,
      need_dz):  # fmt: skip
    dz = z.new_empty(z.shape if need_dz else _EMPTY)
    return dz, torch.empty_like(w_down), torch.empty_like(w_up)


def _save(ctx, inputs, pre, keep):
    z, w_down, w_up, residual, seed, scaling, dropout_p, activation, backend = inputs
    ctx.save_for_backward(z, w_down, w_up, pre, keep, seed)
    ctx.args = (scaling, dropout_p, activation, backend, residual is None)


def _setup_context(ctx, inputs, output):
    _out, pre, keep = output
    _save(ctx, inputs, pre, keep)
    ctx.mark_non_differentiable(pre, keep)


def _grads(ctx, dy, backward) -> tuple:
    """The gradients of (z, w_down, w_up, residual) and the op's other inputs, by `backward`:
    the adapter_bwd op (what a graph holds) or `_run_backward` (the eager Function)."""
    z, w_down, w_up, pre, keep, seed = ctx.saved_tensors
    need = ctx.needs_input_grad
    dz, dwd, dwu = backward(dy, z, w_down, w_up, pre, keep, seed, *ctx.args, need[0])
    return (
        dz if need[0] else None,
        dwd if need[1] else None,
        dwu if need[2] else None,
        dy if need[3] else None,  # the residual's gradient is dy itself: no copy, no op
        *(None,) * 5,
    )


def _backward(ctx, dy, _dpre, _dkeep):
    return _grads(ctx, dy, adapter_bwd)


adapter_fwd.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------------------------
# Two adapters on one input (gate/up pre-adapters)
# ------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastpeft::adapter_pair_fwd", mutates_args=())
def adapter_pair_fwd(
    x: torch.Tensor,
    w_down_1: torch.Tensor,
    w_up_1: torch.Tensor,
    w_down_2: torch.Tensor,
    w_up_2: torch.Tensor,
    seed: torch.Tensor | None,
    scaling: float,
    dropout_p: float,
    activation: str,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u, v, pre [M, 2H], keep) for 2-D x; seed holds two seeds, one per adapter."""
    args = (x, w_down_1, w_up_1, w_down_2, w_up_2, seed, scaling, dropout_p, activation)
    return _run_pair_forward(args, backend)


def _run_pair_forward(args: tuple, backend: str):
    """(u, v, pre, keep) for the pair op's arguments bar `backend`: counted."""
    _counters.record("adapter_pair_fwd", backend)
    return _impl(backend).forward_pair(*args)


@adapter_pair_fwd.register_fake
def _(x, w_down_1, w_up_1, w_down_2, w_up_2, seed, scaling, dropout_p, activation, backend):
    pre = x.new_empty((x.shape[0], 2 * w_down_1.shape[0]), dtype=w_down_1.dtype)
    keep = _keep_like(x, 2, dropout_p, backend)
    return torch.empty_like(x), torch.empty_like(x), pre, keep


@torch.library.custom_op("fastpeft::adapter_pair_bwd", mutates_args=())
def adapter_pair_bwd(
    du: torch.Tensor,
    dv: torch.Tensor,
    x: torch.Tensor,
    w_down_1: torch.Tensor,
    w_up_1: torch.Tensor,
    w_down_2: torch.Tensor,
    w_up_2: torch.Tensor,
    pre: torch.Tensor,
    keep: torch.Tensor,
    seed: torch.Tensor | None,
    scaling: float,
    dropout_p: float,
    activation: str,
    backend: str,
    need_dx: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dW_down_1, dW_up_1, dW_down_2, dW_up_2); dx includes du + dv, empty unless need_dx."""
    grads = _run_pair_backward(du, dv, x, w_down_1, w_up_1, w_down_2, w_up_2, pre, keep, seed,
                               scaling, dropout_p, activation, backend, need_dx)  # fmt: skip
    return (grads[0] if grads[0] is not None else x.new_empty(_EMPTY)), *grads[1:]


def _run_pair_backward(du, dv, x, w_down_1, w_up_1, w_down_2, w_up_2, pre, keep, seed, scaling,
                       dropout_p, activation, backend, need_dx):  # fmt: skip
    """(dx or None, dW_down_1, dW_up_1, dW_down_2, dW_up_2): counted."""
    _counters.record("adapter_pair_bwd", backend)
    weights = (w_down_1, w_up_1, w_down_2, w_up_2)
    return _impl(backend).backward_pair(
        du, dv, x, *weights, pre, keep, seed, scaling, dropout_p, activation, need_dx
    )


@adapter_pair_bwd.register_fake
def _(du, dv, x, w_down_1, w_up_1, w_down_2, w_up_2, pre, keep, seed, scaling, dropout_p,
      activation, backend, need_dx):  # fmt: skip
    dx = x.new_empty(x.shape if need_dx else _EMPTY)
    return dx, *(torch.empty_like(w) for w in (w_down_1, w_up_1, w_down_2, w_up_2))


def _pair_save(ctx, inputs, pre, keep):
    x, w_down_1, w_up_1, w_down_2, w_up_2, seed, scaling, dropout_p, activation, backend = inputs
    ctx.save_for_backward(x, w_down_1, w_up_1, w_down_2, w_up_2, pre, keep, seed)
    ctx.args = (scaling, dropout_p, activation, backend)


def _pair_setup_context(ctx, inputs, output):
    _u, _v, pre, keep = output
    _pair_save(ctx, inputs, pre, keep)
    ctx.mark_non_differentiable(pre, keep)


def _pair_grads(ctx, du, dv, backward) -> tuple:
    """The gradients of (x, the four weights) and the op's other inputs, by `backward`: the
    adapter_pair_bwd op or `_run_pair_backward` (the eager Function)."""
    x, w_down_1, w_up_1, w_down_2, w_up_2, pre, keep, seed = ctx.saved_tensors
    need = ctx.needs_input_grad
    du = torch.zeros_like(x) if du is None else du  # an unused output may bring no gradient
    dv = torch.zeros_like(x) if dv is None else dv
    dx, *dws = backward(
        du, dv, x, w_down_1, w_up_1, w_down_2, w_up_2, pre, keep, seed, *ctx.args, need[0]
    )
    grads = [dx if need[0] else None]
    grads += [g if n else None for g, n in zip(dws, need[1:5], strict=True)]
    return (*grads, *(None,) * 5)


def _pair_backward(ctx, du, dv, _dpre, _dkeep):
    return _pair_grads(ctx, du, dv, adapter_pair_bwd)


adapter_pair_fwd.register_autograd(_pair_backward, setup_context=_pair_setup_context)


# ------------------------------------------------------------------------------------------------
# Eager calls: the same implementation without the custom ops' dispatch cost
# ------------------------------------------------------------------------------------------------


class EagerAdapter(torch.autograd.Function):
    """`adapter_fwd` and its backward for eager calls (torch.compile needs the ops, which
    `fastpeft.functional.adapter` uses while compiling). `apply` takes the op's arguments and
    returns out."""

    @staticmethod
    def forward(ctx, z, w_down, w_up, residual, seed, scaling, dropout_p, activation, backend):
        args = (z, w_down, w_up, residual, seed, scaling, dropout_p, activation, backend)
        out, pre, keep = _run_forward(*args)
        _save(ctx, args, pre, keep)
        return out

    @staticmethod
    def backward(ctx, dy):
        return _grads(ctx, dy, _run_backward)


class EagerAdapterPair(torch.autograd.Function):
    """`adapter_pair_fwd` and its backward for eager calls (as EagerAdapter); returns (u, v)."""

    @staticmethod
    def forward(ctx, x, w_down_1, w_up_1, w_down_2, w_up_2, seed, scaling, dropout_p, activation,
                backend):  # fmt: skip
        args = (x, w_down_1, w_up_1, w_down_2, w_up_2, seed, scaling, dropout_p, activation)
        u, v, pre, keep = _run_pair_forward(args, backend)
        _pair_save(ctx, (*args, backend), pre, keep)
        return u, v

    @staticmethod
    def backward(ctx, du, dv):
        return _pair_grads(ctx, du, dv, _run_pair_backward)
