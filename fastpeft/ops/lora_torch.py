"""The PyTorch LoRA path (CPU, and any device without Triton), written for speed on 2-D inputs.

Compared with PEFT's eager layer it adds the rank-r term into the base output in place (addmm
with alpha = s) instead of building [M, N] temporaries, and keeps only a 1-byte keep-mask for
dropout instead of the mask plus a dropped copy of x; the dropped x is recomputed in backward.
Where PEFT mixes dtypes (fp32 adapters on a 16-bit base) it rounds exactly where PEFT rounds.
"""

import torch
import torch.nn.functional as F

_NO_MASK_SHAPE = (0,)


def keep_mask(x: torch.Tensor, p: float, seed: torch.Tensor) -> torch.Tensor:
    """Bool keep-mask for x from a seeded generator (kept with probability 1 - p)."""
    generator = torch.Generator(device=x.device)
    generator.manual_seed(int(seed.item()))
    keep = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    return keep.bernoulli_(1.0 - p, generator=generator)


def _dropped(x: torch.Tensor, dtype: torch.dtype, keep: torch.Tensor, p: float) -> torch.Tensor:
    """drop(x) in the adapter dtype, as nn.Dropout computes it (x · keep / (1 - p))."""
    x = x.to(dtype)
    if p == 0:
        return x
    return x.mul(keep).mul_(1.0 / (1.0 - p))


def forward(x, weight, bias, lora_a, lora_b, seed, scaling: float, p: float):
    """(y, t, keep) with t = drop(x) Aᵀ in the adapter dtype; keep is empty when p == 0."""
    keep = keep_mask(x, p, seed) if p > 0 else x.new_empty(_NO_MASK_SHAPE, dtype=torch.bool)
    t = _dropped(x, lora_a.dtype, keep, p) @ lora_a.t()
    y = F.linear(x, weight, bias)
    if lora_b.dtype == y.dtype:
        return y.addmm_(t, lora_b.t(), alpha=scaling), t, keep
    # PEFT adds the adapter-dtype term to the upcast base output, then rounds once to base dtype.
    y = torch.addmm(y.to(lora_b.dtype), t, lora_b.t(), alpha=scaling).to(x.dtype)
    return y, t, keep


def backward(dy, x, weight, lora_a, lora_b, t, keep, scaling: float, p: float, need_dx: bool):
    """(dx or None, dA, dB) for y = x Wᵀ + b + s·t Bᵀ with frozen W and b."""
    dy_adapter = dy.to(lora_b.dtype)
    u = (dy_adapter @ lora_b).mul_(scaling)  # s · dy B, [M, R]
    d_lora_b = (dy_adapter.t() @ t).mul_(scaling)
    d_lora_a = u.t() @ _dropped(x, lora_a.dtype, keep, p)
    if not need_dx:
        return None, d_lora_a, d_lora_b
    dx = dy @ weight
    if p == 0 and lora_a.dtype == dx.dtype:
        return dx.addmm_(u, lora_a), d_lora_a, d_lora_b
    low_rank = u @ lora_a
    if p > 0:
        low_rank.mul_(keep).mul_(1.0 / (1.0 - p))
    # PEFT's autograd rounds the adapter branch's dx to x's dtype before summing with the base's.
    return dx.add_(low_rank.to(dx.dtype)), d_lora_a, d_lora_b
