"""Input factories and runners for the adapter op tests.

Non-identity init at scales that matter: W_down ~ N(0, 2/d) puts pre at about N(0, 2), well into
every non-linearity's curved part (tanh saturates, relu cuts half), and W_up ~ N(0, 1/H) makes the
adapter's delta as large as z. Paper A's N(0, 0.02²) would let a wrong kernel hide in the noise.
"""

import torch

from fastpeft import functional
from fastpeft.ops import adapter as ops
from fastpeft.reference import adapter as reference

NAMES = ("out", "dz", "dW_down", "dW_up", "d_residual")
PAIR_NAMES = ("u", "v", "dx", "dW_down_1", "dW_up_1", "dW_down_2", "dW_up_2")


def _rand(g, shape, scale, dtype, device):
    return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)


def make_inputs(M, D, H, dtype, w_dtype, device, residual=False, z_grad=True):
    """(z, w_down, w_up, residual or None, dy); leaves require grad (z unless z_grad=False)."""
    g = torch.Generator().manual_seed(M * 1000 + D * 10 + H)
    z = _rand(g, (M, D), 1.0, dtype, device).requires_grad_(z_grad)
    w_down = _rand(g, (H, D), (2 / D) ** 0.5, w_dtype, device).requires_grad_()
    w_up = _rand(g, (D, H), H**-0.5, w_dtype, device).requires_grad_()
    res = _rand(g, (M, D), 1.0, dtype, device).requires_grad_() if residual else None
    dy = _rand(g, (M, D), 1.0, dtype, device)
    return z, w_down, w_up, res, dy


def _leaves(tensors, cast):
    return [
        None if t is None else cast(t.detach()).requires_grad_(t.requires_grad) for t in tensors
    ]


def _cast(dtype):
    return (lambda t: t) if dtype is None else (lambda t: None if t is None else t.to(dtype))


def run_reference(inputs, scaling, activation, keep, p, dtype=None):
    """Reference (out, dz, dW_down, dW_up, d_residual), every tensor cast to `dtype` if given."""
    z, w_down, w_up, res, dy = inputs
    cast = _cast(dtype)
    leaves = _leaves((z, w_down, w_up, res), cast)
    out = reference.adapter(*leaves[:3], scaling, activation, leaves[3], keep, p)
    out.backward(cast(dy))
    return out.detach(), *(None if t is None else t.grad for t in leaves)


def run_op(inputs, scaling, activation, p, backend, seed):
    z, w_down, w_up, res, dy = inputs
    out, _, _ = ops.adapter_fwd(z, w_down, w_up, res, seed, scaling, p, activation, backend)
    out.backward(dy)
    return out.detach(), z.grad, w_down.grad, w_up.grad, None if res is None else res.grad


def make_pair_inputs(M, D, H, dtype, w_dtype, device, x_grad=True):
    """(x, w_down_1, w_up_1, w_down_2, w_up_2, du, dv)."""
    g = torch.Generator().manual_seed(M * 1000 + D * 10 + H + 7)
    x = _rand(g, (M, D), 1.0, dtype, device).requires_grad_(x_grad)
    weights = []
    for _ in range(2):
        weights.append(_rand(g, (H, D), (2 / D) ** 0.5, w_dtype, device).requires_grad_())
        weights.append(_rand(g, (D, H), H**-0.5, w_dtype, device).requires_grad_())
    du, dv = (_rand(g, (M, D), 1.0, dtype, device) for _ in range(2))
    return x, *weights, du, dv


def run_pair_reference(inputs, scaling, activation, keeps, p, dtype=None):
    cast = _cast(dtype)
    leaves = _leaves(inputs[:5], cast)
    u, v = reference.adapter_pair(*leaves, scaling, activation, *keeps, p)
    torch.autograd.backward([u, v], [cast(inputs[5]), cast(inputs[6])])
    return u.detach(), v.detach(), *(t.grad for t in leaves)


def run_pair_op(inputs, scaling, activation, p, backend, seed):
    leaves, du, dv = inputs[:5], inputs[5], inputs[6]
    u, v, _, _ = ops.adapter_pair_fwd(*leaves, seed, scaling, p, activation, backend)
    torch.autograd.backward([u, v], [du, dv])
    return u.detach(), v.detach(), *(t.grad for t in leaves)


def keep_mask(backend, seed, shape, p):
    return functional.dropout_keep_mask(seed, shape, p, backend=backend) if p > 0 else None


def pair_keep_masks(backend, seed, shape, p):
    if p == 0:
        return None, None
    return tuple(
        functional.dropout_keep_mask(seed[i : i + 1], shape, p, backend=backend) for i in range(2)
    )
