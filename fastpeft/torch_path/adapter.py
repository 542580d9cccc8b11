"""The PyTorch adapter path (backend "torch": CPU, and any device without Triton), on 2-D inputs.

Compared with the eager module it adds s · act(pre) W_upᵀ straight into the residual with one addmm
(alpha = s) instead of building [M, D] temporaries, saves only pre [M, H] for the backward, and
stores nothing for dropout on the CPU: the keep decisions come from fastpeft._C's counter-based
dropout and are recomputed in the backward from the seed (elsewhere a 1-byte mask is stored, as the
LoRA path does). Activation gradients use the aten kernels autograd itself would call, so the
rounding matches the reference.
"""

import torch

from .dropout import apply_dropout_, draw_mask, dropped, stored_shape

_EMPTY = (0,)
_ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
}


def _activation_backward(da: torch.Tensor, pre: torch.Tensor, a: torch.Tensor, activation: str):
    """da ⊙ act'(pre) with the aten backward kernels (tanh and relu read the output a)."""
    if activation == "tanh":
        return torch.ops.aten.tanh_backward(da, a)
    if activation == "relu":
        return torch.ops.aten.threshold_backward(da, a, 0)
    if activation == "gelu":
        return torch.ops.aten.gelu_backward(da, pre)
    return torch.ops.aten.silu_backward(da, pre)


def stored_masks(z: torch.Tensor, seed: torch.Tensor | None, p: float, count: int) -> torch.Tensor:
    """[count, M, D] keep-masks where this path must store them, else an empty tensor."""
    if mask_spec(z, p, count)[0] == _EMPTY:
        return z.new_empty(_EMPTY, dtype=torch.bool)
    return torch.stack([draw_mask(z, p, seed[i]) for i in range(count)])


def mask_spec(z: torch.Tensor, p: float, count: int) -> tuple[tuple[int, ...], torch.dtype]:
    """(shape, dtype) of the keep-masks `forward` (count 1) or `forward_pair` (2) return for z."""
    return stored_shape(z, p, (count,)), torch.bool


def _mask(keep: torch.Tensor, i: int) -> torch.Tensor:
    return keep if keep.numel() == 0 else keep[i]


def _bottleneck(z, w_down, keep, seed, p: float) -> torch.Tensor:
    return dropped(z, w_down.dtype, keep, seed, p) @ w_down.t()


def _up(a, w_up, residual, scaling: float) -> torch.Tensor:
    if w_up.dtype == residual.dtype:
        return torch.addmm(residual, a, w_up.t(), alpha=scaling)
    # The reference adds the adapter-dtype delta to the promoted residual, then rounds once.
    promoted = torch.promote_types(w_up.dtype, residual.dtype)
    out = torch.addmm(residual.to(promoted), a.to(promoted), w_up.t().to(promoted), alpha=scaling)
    return out.to(residual.dtype)


def forward(z, w_down, w_up, residual, seed, scaling: float, p: float, activation: str):
    """(out, pre, keep) for 2-D z; keep is empty unless this device must store the mask."""
    keep = stored_masks(z, seed, p, 1)
    pre = _bottleneck(z, w_down, _mask(keep, 0), seed if p == 0 else seed[0], p)
    a = _ACTIVATIONS[activation](pre)
    out = _up(a, w_up, z if residual is None else residual, scaling)
    return out, pre, keep


def _branch_grads(dy, pre, w_up, scaling: float, activation: str):
    """(g, dW_up) of one adapter: g = s · (dy W_up) ⊙ act'(pre), dW_up = s · dyᵀ act(pre)."""
    dy_w = dy.to(w_up.dtype)
    a = _ACTIVATIONS[activation](pre)
    d_w_up = (dy_w.t() @ a).mul_(scaling)
    g = _activation_backward((dy_w @ w_up).mul_(scaling), pre, a, activation)
    return g, d_w_up


def _dz_term(g, w_down, keep, seed, p: float, dtype: torch.dtype) -> torch.Tensor:
    """drop'(g W_down) in z's dtype (the reference rounds it there before adding residual grads)."""
    t = g @ w_down
    if p > 0:
        apply_dropout_(t, keep, seed, p)
    return t.to(dtype)


def backward(dy, z, w_down, w_up, pre, keep, seed, scaling, p, activation, residual_is_z, need_dz):
    """(dz or None, dW_down, dW_up) for 2-D dy/z; dz includes dy when the residual is z."""
    seed1 = seed if p == 0 else seed[0]
    g, d_w_up = _branch_grads(dy, pre, w_up, scaling, activation)
    d_w_down = g.t() @ dropped(z, w_down.dtype, _mask(keep, 0), seed1, p)
    if not need_dz:
        return None, d_w_down, d_w_up
    if residual_is_z and p == 0 and w_down.dtype == z.dtype == dy.dtype:
        return torch.addmm(dy, g, w_down), d_w_down, d_w_up
    dz = _dz_term(g, w_down, _mask(keep, 0), seed1, p, z.dtype)
    if residual_is_z:
        dz.add_(dy)
    return dz, d_w_down, d_w_up


def forward_pair(x, w_down_1, w_up_1, w_down_2, w_up_2, seed, scaling, p, activation):
    """(u, v, pre, keep) for 2-D x; pre [M, 2H] holds both bottleneck activations."""
    keep = stored_masks(x, seed, p, 2)
    H = w_down_1.shape[0]
    if p == 0:  # one GEMM reads x once for both adapters
        pre = x.to(w_down_1.dtype) @ torch.cat([w_down_1, w_down_2]).t()
    else:
        pre = torch.cat(
            [
                _bottleneck(x, w_down_1, _mask(keep, 0), seed[0], p),
                _bottleneck(x, w_down_2, _mask(keep, 1), seed[1], p),
            ],
            dim=1,
        )
    act = _ACTIVATIONS[activation]
    u = _up(act(pre[:, :H]), w_up_1, x, scaling)
    v = _up(act(pre[:, H:]), w_up_2, x, scaling)
    return u, v, pre, keep


def backward_pair(du, dv, x, w_down_1, w_up_1, w_down_2, w_up_2, pre, keep, seed, scaling, p,
                  activation, need_dx):  # fmt: skip
    """(dx or None, dW_down_1, dW_up_1, dW_down_2, dW_up_2); dx includes du + dv."""
    H = w_down_1.shape[0]
    g1, d_w_up_1 = _branch_grads(du, pre[:, :H], w_up_1, scaling, activation)
    g2, d_w_up_2 = _branch_grads(dv, pre[:, H:], w_up_2, scaling, activation)
    seeds = (seed, seed) if p == 0 else (seed[0], seed[1])
    x1 = dropped(x, w_down_1.dtype, _mask(keep, 0), seeds[0], p)
    x2 = x1 if p == 0 else dropped(x, w_down_2.dtype, _mask(keep, 1), seeds[1], p)
    d_w_down_1, d_w_down_2 = g1.t() @ x1, g2.t() @ x2
    if not need_dx:
        return None, d_w_down_1, d_w_up_1, d_w_down_2, d_w_up_2
    if p == 0 and w_down_1.dtype == x.dtype == du.dtype == dv.dtype:
        dx = torch.add(du, dv).addmm_(g1, w_down_1).addmm_(g2, w_down_2)
    else:
        dx = torch.add(du, dv).to(x.dtype)
        dx += _dz_term(g1, w_down_1, _mask(keep, 0), seeds[0], p, x.dtype)
        dx += _dz_term(g2, w_down_2, _mask(keep, 1), seeds[1], p, x.dtype)
    return dx, d_w_down_1, d_w_up_1, d_w_down_2, d_w_up_2
