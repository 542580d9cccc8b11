"""Dropout for the PyTorch paths: counter-based via fastpeft._C on the CPU, a stored mask elsewhere.

On the CPU the keep decisions are a hash of (seed, row, column), recomputed in backward, so
nothing is stored. Elsewhere (a GPU without Triton, or no extension) a 1-byte keep-mask is drawn
from a seeded generator and stored instead of a dropped copy of the input.
"""

import torch

from .. import _ext


def counter_based(device: torch.device) -> bool:
    # NOTE: measured on the 2-core CI CPU, [512, 1536] fp32: _C.dropout_ 1.0 ms vs
    # aten::bernoulli_ into a bool mask 5.1 ms; bernoulli was 18% of a LoRA training step.
    return device.type == "cpu" and _ext.available()


def draw_mask(x: torch.Tensor, p: float, seed: torch.Tensor) -> torch.Tensor:
    """The bool keep-mask this path applies to x (kept with probability 1 - p)."""
    if counter_based(x.device):
        return _ext.require().dropout_keep_mask(int(seed.item()), x.shape[0], x.shape[1], p)
    generator = torch.Generator(device=x.device)
    generator.manual_seed(int(seed.item()))
    keep = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    return keep.bernoulli_(1.0 - p, generator=generator)


def apply_dropout_(t: torch.Tensor, keep: torch.Tensor, seed: torch.Tensor, p: float):
    """t ⊙ keep / (1 - p) in place, with `keep` stored or recomputed from `seed`."""
    if keep.numel() == 0:
        return _ext.require().dropout_(t, int(seed.item()), p)
    return t.mul_(keep).mul_(1.0 / (1.0 - p))


def dropped(x, dtype, keep, seed, p: float) -> torch.Tensor:
    """drop(x) in the adapter dtype, as nn.Dropout computes it (x · keep / (1 - p))."""
    if p == 0:
        return x.to(dtype)
    return apply_dropout_(
        torch.empty(x.shape, dtype=dtype, device=x.device).copy_(x), keep, seed, p
    )


def stored_shape(x: torch.Tensor, p: float, leading: tuple[int, ...] = ()) -> tuple[int, ...]:
    """The shape of the masks this path stores for x (`leading` + x's shape), or (0,) when it
    stores none (no dropout, or counter-based on the CPU)."""
    if p == 0 or counter_based(x.device):
        return (0,)
    return (*leading, *x.shape)
