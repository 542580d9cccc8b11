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
autograd rules so the ops pass torch.library.opcheck and compile with fullgraph=True.
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
    _counters.record("adapter_bwd", backend)
    args = (scaling, dropout_p, activation, residual_is_z, need_dz)
    dz, dwd, dwu = _impl(backend).backward(dy, z, w_down, w_up, pre, keep, seed, *args)
    return (dz if dz is not None else z.new_empty(_EMPTY)), dwd, dwu


@adapter_bwd.register_fake
def _(dy, z, w_down, w_up, pre, keep, seed, scaling, dropout_p, activation, backend, res_is_z,
      need_dz):  # fmt: skip
    dz = z.new_empty(z.shape if need_dz else _EMPTY)
    return dz, torch.empty_like(w_down), torch.empty_like(w_up)


def _setup_context(ctx, inputs, output):
    z, w_down, w_up, residual, seed, scaling, dropout_p, activation, backend = inputs
    _out, pre, keep = output
    ctx.save_for_backward(z, w_down, w_up, pre, keep, seed)
    ctx.args = (scaling, dropout_p, activation, backend, residual is None)
    ctx.mark_non_differentiable(pre, keep)


def _backward(ctx, dy, _dpre, _dkeep):
    z, w_down, w_up, pre, keep, seed = ctx.saved_tensors
    need = ctx.needs_input_grad
    dz, dwd, dwu = adapter_bwd(dy, z, w_down, w_up, pre, keep, seed, *ctx.args, need[0])
    return (
        dz if need[0] else None,
        dwd if need[1] else None,
        dwu if need[2] else None,
        dy if need[3] else None,  # the residual's gradient is dy itself: no copy, no op
        *(None,) * 5,
    )


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
    _counters.record("adapter_pair_fwd", backend)
    args = (x, w_down_1, w_up_1, w_down_2, w_up_2, seed, scaling, dropout_p, activation)
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
    _counters.record("adapter_pair_bwd", backend)
    weights = (w_down_1, w_up_1, w_down_2, w_up_2)
    grads = _impl(backend).backward_pair(
        du, dv, x, *weights, pre, keep, seed, scaling, dropout_p, activation, need_dx
    )
    return (grads[0] if grads[0] is not None else x.new_empty(_EMPTY)), *grads[1:]


@adapter_pair_bwd.register_fake
def _(du, dv, x, w_down_1, w_up_1, w_down_2, w_up_2, pre, keep, seed, scaling, dropout_p,
      activation, backend, need_dx):  # fmt: skip
    dx = x.new_empty(x.shape if need_dx else _EMPTY)
    return dx, *(torch.empty_like(w) for w in (w_down_1, w_up_1, w_down_2, w_up_2))


def _pair_setup_context(ctx, inputs, output):
    x, w_down_1, w_up_1, w_down_2, w_up_2, seed, scaling, dropout_p, activation, backend = inputs
    _u, _v, pre, keep = output
    ctx.save_for_backward(x, w_down_1, w_up_1, w_down_2, w_up_2, pre, keep, seed)
    ctx.args = (scaling, dropout_p, activation, backend)
    ctx.mark_non_differentiable(pre, keep)


def _pair_backward(ctx, du, dv, _dpre, _dkeep):
    x, w_down_1, w_up_1, w_down_2, w_up_2, pre, keep, seed = ctx.saved_tensors
    need = ctx.needs_input_grad
    du = torch.zeros_like(x) if du is None else du  # an unused output may bring no gradient
    dv = torch.zeros_like(x) if dv is None else dv
    dx, *dws = adapter_pair_bwd(
        du, dv, x, w_down_1, w_up_1, w_down_2, w_up_2, pre, keep, seed, *ctx.args, need[0]
    )
    grads = [dx if need[0] else None]
    grads += [g if n else None for g, n in zip(dws, need[1:5], strict=True)]
    return (*grads, *(None,) * 5)


adapter_pair_fwd.register_autograd(_pair_backward, setup_context=_pair_setup_context)
