"""Fused bottleneck adapters (SPEC §3) as torch.library custom ops, and their public wrappers.

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

The forward ops return (outputs..., pre, keep): keep is the dropout mask where one must be stored
(the PyTorch path off the CPU) and empty wherever it is regenerated from `seed` (Triton, and the
CPU path through fastpeft._C). One custom-op boundary per call, with explicit fake and autograd
rules so the ops pass torch.library.opcheck and compile with fullgraph=True.
"""

import math

import torch

from ..reference.adapter import ACTIVATIONS
from . import _counters, _dispatch, _dropout_torch, adapter_torch

_EMPTY = (0,)
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _triton_impl():
    # Imported lazily: importing fastpeft must not import or compile Triton kernels.
    from . import adapter_triton

    return adapter_triton


def _keep_shape(z: torch.Tensor, count: int, p: float, backend: str) -> tuple[int, ...]:
    if backend == "torch" and p > 0 and not adapter_torch.counter_based(z.device):
        return (count, *z.shape)
    return _EMPTY


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
    if backend == "triton":
        out, pre = _triton_impl().forward(
            z, w_down, w_up, residual, seed, scaling, dropout_p, activation
        )
        return out, pre, z.new_empty(_EMPTY, dtype=torch.bool)
    return adapter_torch.forward(z, w_down, w_up, residual, seed, scaling, dropout_p, activation)


@adapter_fwd.register_fake
def _(z, w_down, w_up, residual, seed, scaling, dropout_p, activation, backend):
    out = z.new_empty(z.shape, dtype=(z if residual is None else residual).dtype)
    pre = z.new_empty((z.shape[0], w_down.shape[0]), dtype=w_down.dtype)
    return out, pre, z.new_empty(_keep_shape(z, 1, dropout_p, backend), dtype=torch.bool)


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
    if backend == "triton":
        dz, dwd, dwu = _triton_impl().backward(dy, z, w_down, w_up, pre, seed, *args)
    else:
        dz, dwd, dwu = adapter_torch.backward(dy, z, w_down, w_up, pre, keep, seed, *args)
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
    if backend == "triton":
        u, v, pre = _triton_impl().forward_pair(*args)
        return u, v, pre, x.new_empty(_EMPTY, dtype=torch.bool)
    return adapter_torch.forward_pair(*args)


@adapter_pair_fwd.register_fake
def _(x, w_down_1, w_up_1, w_down_2, w_up_2, seed, scaling, dropout_p, activation, backend):
    pre = x.new_empty((x.shape[0], 2 * w_down_1.shape[0]), dtype=w_down_1.dtype)
    keep = x.new_empty(_keep_shape(x, 2, dropout_p, backend), dtype=torch.bool)
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
    if backend == "triton":
        grads = _triton_impl().backward_pair(
            du, dv, x, *weights, pre, seed, scaling, dropout_p, activation, need_dx
        )
    else:
        grads = adapter_torch.backward_pair(
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


def dropout_keep_mask(seed: torch.Tensor, shape: tuple[int, int], p: float, backend: str):
    """The bool keep-mask `backend` derives from the one-element `seed` for an input of `shape`.

    For a pair, adapter i's mask comes from ``seed[i : i + 1]``. Tests and debugging only.
    """
    if backend == "triton":
        return _triton_impl().dropout_keep_mask(seed, shape[0], shape[1], p)
    return _dropout_torch.keep_mask(torch.empty(shape, device=seed.device), p, seed)


# ------------------------------------------------------------------------------------------------
# Public wrappers
# ------------------------------------------------------------------------------------------------


def _require_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {value.dtype}")
    return value


def _check_weights(z, w_down, w_up, names: tuple[str, str]) -> None:
    down, up = names
    _require_tensor(w_down, down)
    _require_tensor(w_up, up)
    d = z.shape[-1]
    if w_down.dim() != 2 or w_down.shape[1] != d or w_down.shape[0] == 0:
        raise ValueError(
            f"{down} must have shape [H, d={d}] with H >= 1, got {tuple(w_down.shape)}"
        )
    H = w_down.shape[0]
    if tuple(w_up.shape) != (d, H):
        raise ValueError(f"{up} must have shape [d={d}, H={H}], got {tuple(w_up.shape)}")
    if w_down.dtype != w_up.dtype:
        raise TypeError(
            f"{down} and {up} must share one dtype, got {w_down.dtype} and {w_up.dtype}"
        )


def _check_common(tensors: dict, scaling, activation, dropout_p) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a str, got {type(activation).__name__}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    if isinstance(scaling, bool) or not isinstance(scaling, (int, float)):
        raise TypeError(f"scaling must be a number, got {type(scaling).__name__}")
    if not math.isfinite(scaling):
        raise ValueError(f"scaling must be finite, got {scaling!r}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        raise TypeError(f"dropout_p must be a number, got {type(dropout_p).__name__}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p!r}")


def _check_input(z, name: str) -> None:
    _require_tensor(z, name)
    if z.dim() < 1 or z.shape[-1] == 0:
        raise ValueError(f"{name} must have shape [..., d] with d >= 1, got {tuple(z.shape)}")


def _draw_seed(count: int, p: float, device: torch.device) -> torch.Tensor | None:
    # Drawn from torch's generator inside the graph, so the ops stay pure and compile-friendly.
    if p == 0:
        return None
    return torch.randint(0, 2**31 - 1, (count,), device=device, dtype=torch.int64)


def adapter(
    z: torch.Tensor,
    w_down: torch.Tensor,
    w_up: torch.Tensor,
    scaling: float = 1.0,
    activation: str = "tanh",
    dropout_p: float = 0.0,
    residual: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Fused bottleneck adapter: ``residual + scaling · act(drop(z) w_downᵀ) w_upᵀ``.

    z [..., d] (fp32, fp16 or bf16); w_down [H, d] and w_up [d, H] share the adapter dtype, which
    may differ from z's (fp32 adapters on a 16-bit model: z is cast to it for the bottleneck and
    the sum is rounded once to the residual's dtype). ``residual`` [..., d] defaults to z (a pre-
    or post-adapter); pass the base output for a parallel adapter. ``activation`` is one of tanh,
    relu, gelu (exact erf form) or silu. ``dropout_p`` is inverted dropout on z for the bottleneck
    (pass 0 in eval mode); its mask comes from counter-based random numbers seeded from torch's
    global generator and is regenerated, not stored, for the backward. Gradients flow to z,
    w_down, w_up and residual; only pre [M, H] is saved. Returns [..., d] in the residual's dtype.
    ``backend``: "auto" (Triton on CUDA, PyTorch elsewhere), "triton" or "torch".
    """
    _check_input(z, "z")
    _check_weights(z, w_down, w_up, ("w_down", "w_up"))
    tensors = {"z": z, "w_down": w_down, "w_up": w_up}
    if residual is not None:
        _require_tensor(residual, "residual")
        if residual.shape != z.shape:
            raise ValueError(
                f"residual must have z's shape {tuple(z.shape)}, got {tuple(residual.shape)}"
            )
        tensors["residual"] = residual
    _check_common(tensors, scaling, activation, dropout_p)
    resolved = _dispatch.resolve(backend, z.device)
    d = z.shape[-1]
    res2d = None if residual is None else residual.reshape(-1, d)
    out, _, _ = adapter_fwd(
        z.reshape(-1, d), w_down, w_up, res2d, _draw_seed(1, dropout_p, z.device),
        float(scaling), float(dropout_p), activation, resolved,
    )  # fmt: skip
    return out.reshape(z.shape)


def adapter_pair(
    x: torch.Tensor,
    w_down_1: torch.Tensor,
    w_up_1: torch.Tensor,
    w_down_2: torch.Tensor,
    w_up_2: torch.Tensor,
    scaling: float = 1.0,
    activation: str = "tanh",
    dropout_p: float = 0.0,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two pre-adapters on one input: ``(x + A1(x), x + A2(x))``, x read once.

    Paper A's LLaVA placement puts one adapter on gate_proj's input and an independent one on
    up_proj's; both see the same x [..., d]. Each A is as in :func:`adapter` (same scaling,
    activation and dropout probability, independent dropout masks). All four weights share one
    dtype and w_down_2/w_up_2 have w_down_1/w_up_1's shapes. Returns (u, v), each [..., d] in x's
    dtype; gradients flow to x and all four weights.
    """
    _check_input(x, "x")
    _check_weights(x, w_down_1, w_up_1, ("w_down_1", "w_up_1"))
    _check_weights(x, w_down_2, w_up_2, ("w_down_2", "w_up_2"))
    if w_down_2.shape != w_down_1.shape:
        raise ValueError(
            f"w_down_2 must have w_down_1's shape {tuple(w_down_1.shape)}, "
            f"got {tuple(w_down_2.shape)}"
        )
    if w_down_2.dtype != w_down_1.dtype:
        raise TypeError(
            f"w_down_2/w_up_2 must have w_down_1's dtype {w_down_1.dtype}, got {w_down_2.dtype}"
        )
    tensors = {"x": x, "w_down_1": w_down_1, "w_up_1": w_up_1}
    tensors.update(w_down_2=w_down_2, w_up_2=w_up_2)
    _check_common(tensors, scaling, activation, dropout_p)
    resolved = _dispatch.resolve(backend, x.device)
    d = x.shape[-1]
    u, v, _, _ = adapter_pair_fwd(
        x.reshape(-1, d), w_down_1, w_up_1, w_down_2, w_up_2,
        _draw_seed(2, dropout_p, x.device), float(scaling), float(dropout_p), activation, resolved,
    )  # fmt: skip
    return u.reshape(x.shape), v.reshape(x.shape)
