"""The PyTorch IA3 path (CPU, and any device without Triton), written for speed on 2-D inputs.

It computes PEFT's math with PEFT's rounding points, minus PEFT's temporaries: where PEFT upcasts a
16-bit tensor to l's fp32 dtype, multiplies and casts back, this path multiplies into a tensor of
the 16-bit dtype (TensorIterator computes in the promoted dtype and rounds once on the store: the
same bits, no fp32 [M, N] copy), in place where the operand is a fresh temporary. Nothing beyond
what the backward needs is kept (see fastpeft/ops/ia3.py).
"""

import torch
import torch.nn.functional as F


def _scaled(t: torch.Tensor, ia3_l: torch.Tensor) -> torch.Tensor:
    """t ⊙ l in t's dtype, computed in the promoted dtype and rounded once (as PEFT's .to())."""
    return torch.mul(t, ia3_l, out=torch.empty_like(t))


def _column_dot(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Σ_m a ⊙ b over tokens, as PEFT's mul backward computes it: the products in the promoted
    dtype (exact for 16-bit a, b with an fp32 l), then one reduction."""
    compute = torch.promote_types(a.dtype, dtype)
    products = a * b if compute == a.dtype else a.to(compute).mul_(b)
    return products.sum(dim=0).to(dtype)


def forward(x, weight, bias, ia3_l, feedforward: bool, save_z: bool):
    """(y, z): z = x Wᵀ + b (base dtype) in the output case with save_z, else None."""
    if feedforward:
        return F.linear(_scaled(x, ia3_l), weight, bias), None
    z = F.linear(x, weight, bias)
    if not save_z:
        return z.mul_(ia3_l), None  # z is a fresh temporary: scale it in place
    return _scaled(z, ia3_l), z


def backward(dy, saved, weight, ia3_l, feedforward: bool, need_dx: bool, need_dl: bool):
    """(dx or None, dl or None); `saved` is x (input case) or z (output case)."""
    if feedforward:
        g = dy @ weight  # PEFT's base GEMM backward, rounded to the base dtype
        dl = _column_dot(g, saved, ia3_l.dtype) if need_dl else None
        return (g.mul_(ia3_l) if need_dx else None), dl  # g is not needed after dl
    dl = _column_dot(dy, saved, ia3_l.dtype) if need_dl else None
    dx = _scaled(dy, ia3_l) @ weight if need_dx else None
    return dx, dl
