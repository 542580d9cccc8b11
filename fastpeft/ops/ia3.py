"""Fused IA3 linear as torch.library custom ops (one op pair for both IA3 cases).

Frozen W [N, K], b [N]; x [M, K]; trainable vector l. D is the base dtype (x's and W's); l is fp32
(PEFT's default) or D. Rounding to D happens exactly where PEFT's layer rounds.

Output scaling (`feedforward=False`, attention targets k_proj / v_proj), l [N]:

    z  = x Wᵀ + b                   [M, N]  in D (PEFT's base layer output)
    y  = z ⊙ l                              rounded once to D
    dx = (dy ⊙ l) W                         dy ⊙ l rounded to D first (PEFT's autograd does)
    dl = Σ_m dy ⊙ z                 [N]     fp32 products and sum, cast to l's dtype

Input scaling (`feedforward=True`, down_proj), l [K]:

    y  = (x ⊙ l) Wᵀ + b                     x ⊙ l rounded to D before the GEMM
    g  = dy W                       [M, K]  in D (PEFT's base GEMM backward)
    dx = g ⊙ l                              rounded once to D
    dl = Σ_m x ⊙ g                  [K]

What the backward keeps (the dl design):
- Output case: dl needs z. Recomputing z = x Wᵀ + b in the backward would cost a second full GEMM
  (and x kept alive); recovering z = y / l is inexact (y was rounded after the multiply) and
  undefined where l = 0. The cheapest exact scheme is to have the forward GEMM's epilogue also
  write z in D: one extra [M, N] store, and exactly the tensor PEFT itself keeps for this backward
  (its `result * l` saves `result`). So z is saved and x is not. z is written only when l will
  need a gradient (`save_z`, false under no_grad or with a frozen l), so inference pays nothing.
  The backward reads z once, in programs of the dx GEMM's launch that do only that: each sums
  dy ⊙ z over a block of tokens into fp32 partials [num_m_blocks, N], summed in a fixed order on
  the host (deterministic, no atomics), while the GEMM's own programs keep a branch-free main
  loop. Without dx, a plain two-stage reduction runs. The hybrid path (cuBLAS GEMMs, side
  kernel: fastpeft/triton_path/ia3_hybrid.py) keeps the same tensors.
- Input case: dl needs x and g; g is computed for dx anyway, so dl is a second epilogue of that
  one GEMM (g never reaches memory) and x is saved: it is the op's input, alive already (PEFT,
  on a 16-bit base with an fp32 l, keeps an fp32 copy of x for its mul backward instead).

`ia3_linear_fwd` returns (y, z); z is an empty tensor unless the output case saves it. One
custom-op boundary per patched module call (`backend` names the implementation the dispatcher
chose; all share one signature), with explicit fake and autograd rules so the ops pass
torch.library.opcheck and compile with fullgraph=True.
"""

import torch

from .. import dispatch
from . import _counters

_EMPTY = (0,)


def _saves_z(feedforward: bool, save_z: bool) -> bool:
    return save_z and not feedforward


def _run_forward(x, weight, bias, ia3_l, feedforward, save_z, backend):
    """(y, z or None): the implementation `backend` names, counted."""
    _counters.record("ia3_fwd", backend)
    impl = dispatch.implementation("ia3", backend)
    return impl.forward(x, weight, bias, ia3_l, feedforward, _saves_z(feedforward, save_z))


def _run_backward(dy, saved, weight, ia3_l, feedforward, need_dx, need_dl, backend):
    """(dx or None, dl or None): the implementation `backend` names, counted."""
    _counters.record("ia3_bwd", backend)
    impl = dispatch.implementation("ia3", backend)
    return impl.backward(dy, saved, weight, ia3_l, feedforward, need_dx, need_dl)


@torch.library.custom_op("fastpeft::ia3_linear_fwd", mutates_args=())
def ia3_linear_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    ia3_l: torch.Tensor,
    feedforward: bool,
    save_z: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, z) for 2-D x; z = x Wᵀ + b is returned (for dl) only in the output case with save_z."""
    y, z = _run_forward(x, weight, bias, ia3_l, feedforward, save_z, backend)
    return y, (z if z is not None else x.new_empty(_EMPTY))


@ia3_linear_fwd.register_fake
def _(x, weight, bias, ia3_l, feedforward, save_z, backend):
    shape = (x.shape[0], weight.shape[0])
    return x.new_empty(shape), x.new_empty(shape if _saves_z(feedforward, save_z) else _EMPTY)


@torch.library.custom_op("fastpeft::ia3_linear_bwd", mutates_args=())
def ia3_linear_bwd(
    dy: torch.Tensor,
    saved: torch.Tensor,
    weight: torch.Tensor,
    ia3_l: torch.Tensor,
    feedforward: bool,
    need_dx: bool,
    need_dl: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dl); each is an empty tensor when not needed. `saved` is x (input case) or z."""
    dx, dl = _run_backward(dy, saved, weight, ia3_l, feedforward, need_dx, need_dl, backend)
    return (
        dx if dx is not None else dy.new_empty(_EMPTY),
        dl if dl is not None else ia3_l.new_empty(_EMPTY),
    )


@ia3_linear_bwd.register_fake
def _(dy, saved, weight, ia3_l, feedforward, need_dx, need_dl, backend):
    dx = dy.new_empty((dy.shape[0], weight.shape[1]) if need_dx else _EMPTY)
    return dx, torch.empty_like(ia3_l) if need_dl else ia3_l.new_empty(_EMPTY)


def _needs(ctx) -> tuple[bool, bool]:
    """(need_dx, need_dl) of a backward; the frozen base is checked here, where it is known."""
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        raise RuntimeError("fastpeft IA3: the base weight and bias must be frozen")
    return ctx.needs_input_grad[0], ctx.needs_input_grad[3]


def _check_saved(saved: torch.Tensor, need_dl: bool) -> None:
    if need_dl and saved.dim() != 2:
        raise RuntimeError(
            "fastpeft IA3: ia3_l needs a gradient but the forward ran with save_z=False"
        )


def _grads(need_dx: bool, need_dl: bool, dx, dl) -> tuple:
    """The autograd return for (x, weight, bias, ia3_l, feedforward, save_z, backend)."""
    return (dx if need_dx else None, None, None, dl if need_dl else None, None, None, None)


def _setup_context(ctx, inputs, output):
    x, weight, _bias, ia3_l, feedforward, _save_z, backend = inputs
    _y, z = output
    # Only what the backward reads: x for the input case, z for the output case (never both).
    ctx.save_for_backward(x if feedforward else z, weight, ia3_l)
    ctx.feedforward, ctx.backend = feedforward, backend
    ctx.mark_non_differentiable(z)


def _backward(ctx, dy, _dz):
    saved, weight, ia3_l = ctx.saved_tensors
    need_dx, need_dl = _needs(ctx)
    _check_saved(saved, need_dl)
    dx, dl = ia3_linear_bwd(
        dy, saved, weight, ia3_l, ctx.feedforward, need_dx, need_dl, ctx.backend
    )
    return _grads(need_dx, need_dl, dx, dl)


ia3_linear_fwd.register_autograd(_backward, setup_context=_setup_context)


class EagerIA3Linear(torch.autograd.Function):
    """The same forward and backward as the custom ops, for eager calls: a custom op's dispatcher
    round trips and autograd registration cost 90–120 µs per forward + backward on a CPU
    (measured on this project's 2-core VM), as much as IA3's own elementwise work at bench
    shapes. torch.compile needs the ops (`fastpeft.functional.ia3_linear` uses them while
    compiling); eager calls take this Function, which runs the same implementation, counted
    alike. `apply(x, weight, bias, ia3_l, feedforward, save_z, backend)` returns y."""

    @staticmethod
    def forward(ctx, x, weight, bias, ia3_l, feedforward, save_z, backend):
        y, z = _run_forward(x, weight, bias, ia3_l, feedforward, save_z, backend)
        saved = x if feedforward else (z if z is not None else x.new_empty(_EMPTY))
        ctx.save_for_backward(saved, weight, ia3_l)
        ctx.feedforward, ctx.backend = feedforward, backend
        return y

    @staticmethod
    def backward(ctx, dy):
        saved, weight, ia3_l = ctx.saved_tensors
        need_dx, need_dl = _needs(ctx)
        _check_saved(saved, need_dl)
        if not (need_dx or need_dl):
            return _grads(False, False, None, None)
        dx, dl = _run_backward(
            dy.contiguous(), saved, weight, ia3_l, ctx.feedforward, need_dx, need_dl, ctx.backend
        )
        return _grads(need_dx, need_dl, dx, dl)
