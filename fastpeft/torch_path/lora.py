"""The PyTorch LoRA path (backend "torch": CPU, and any device without Triton), fast on 2-D inputs.

Compared with PEFT's eager layer it adds the rank-r term into the base output in place (addmm
with alpha = s) instead of building [M, N] temporaries, and stores nothing for dropout: on the CPU
the keep decisions come from fastpeft._C's counter-based dropout, recomputed in backward from the
seed. (Elsewhere, or without the extension, a 1-byte keep-mask is stored instead of PEFT's mask
plus dropped copy of x.) Where PEFT mixes dtypes (fp32 adapters on a 16-bit base) it rounds
exactly where PEFT rounds.
"""

import torch
import torch.nn.functional as F

from .dropout import apply_dropout_, draw_mask, dropped, stored_shape

_EMPTY = (0,)


def forward(x, weight, bias, lora_a, lora_b, seed, scaling: float, p: float):
    """(y, t, keep) with t = drop(x) Aᵀ in the adapter dtype; keep is empty unless stored."""
    keep = x.new_empty(_EMPTY, dtype=torch.bool)
    if stored_shape(x, p) != _EMPTY:
        keep = draw_mask(x, p, seed)
    t = dropped(x, lora_a.dtype, keep, seed, p) @ lora_a.t()
    y = F.linear(x, weight, bias)
    if lora_b.dtype == y.dtype:
        return y.addmm_(t, lora_b.t(), alpha=scaling), t, keep
    # PEFT adds the adapter-dtype term to the upcast base output, then rounds once to base dtype.
    y = torch.addmm(y.to(lora_b.dtype), t, lora_b.t(), alpha=scaling).to(x.dtype)
    return y, t, keep


def backward(dy, x, weight, lora_a, lora_b, t, keep, seed, scaling: float, p: float, need_dx):
    """(dx or None, dA, dB) for y = x Wᵀ + b + s·t Bᵀ with frozen W and b."""
    dy_adapter = dy.to(lora_b.dtype)
    u = (dy_adapter @ lora_b).mul_(scaling)  # s · dy B, [M, R]
    d_lora_b = (dy_adapter.t() @ t).mul_(scaling)
    d_lora_a = u.t() @ dropped(x, lora_a.dtype, keep, seed, p)
    if not need_dx:
        return None, d_lora_a, d_lora_b
    dx = dy @ weight
    if p == 0 and lora_a.dtype == dx.dtype:
        return dx.addmm_(u, lora_a), d_lora_a, d_lora_b
    low_rank = u @ lora_a
    if p > 0:
        apply_dropout_(low_rank, keep, seed, p)
    # PEFT's autograd rounds the adapter branch's dx to x's dtype before summing with the base's.
    return dx.add_(low_rank.to(dx.dtype)), d_lora_a, d_lora_b


def keep_mask(seed: torch.Tensor, M: int, K: int, p: float) -> torch.Tensor:
    """The [M, K] bool keep-mask this path applies for `seed` (tests and debugging only)."""
    return draw_mask(torch.empty((M, K), device=seed.device), p, seed)


def mask_spec(x: torch.Tensor, p: float) -> tuple[tuple[int, ...], torch.dtype]:
    """(shape, dtype) of the keep-mask `forward` returns for x (for the op's fake)."""
    return stored_shape(x, p), torch.bool
