"""SPIDER and MagnitudeMask (SPEC §6), transcribed literally: per tensor, clear and slow.

This is the ground truth for the fused engine in ``fastpeft.spider`` and the "paper-style loop" of
its benchmark. It keeps the paper code's structure: full copies of θ₀, I_pre and G per trainable
tensor, ~15-20 small kernels and two host synchronisations (``any()`` and the nonzero mean) per
tensor per step.

For every trainable tensor w, with R(T) = sigmoid((|T| − mean|T|) / (std|T| + 1e-12)) over the
elements of that one tensor (unbiased std; R = 0 where T is all zeros)::

    θ₀ = copy of w at construction;  I_pre = R(θ₀)
    each step, after optimizer.step():
        G += g                                  (never reset, never decayed)
        I_ft = R(G)
        c_raw = I_ft / (I_pre + I_ft)  where I_pre < I_ft, else 0
        m = mean of c_raw over its nonzero elements (the tensor is skipped when there are none)
        c = min(c_raw / m, 1)
        w ← θ₀ + c ⊙ (w − θ₀)

Two choices the spec leaves open, made identically by the engine:

- a 1-element tensor has std := 0 (the unbiased std of one element is undefined), so R = 0.5 for
  it unless it is zero;
- "skip" means the tensor is left unchanged this step (its G is still accumulated).

``dtype`` is the precision of all state and arithmetic: float32 mirrors the paper code (used by the
benchmark); tests use float64 so the reference is the exact math, free of fp32 summation error.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

EPS = 1e-12


def importance(t: torch.Tensor) -> torch.Tensor:
    """R(t): sigmoid((|t| − mean|t|) / (std|t| + EPS)) elementwise, 0 where t is all zeros.

    Any shape and floating dtype; the result has t's shape and dtype. The std is unbiased
    (torch's default, as in the paper code) and taken as 0 for a 1-element tensor.
    """
    a = t.abs()
    if not bool(a.any()):  # host sync, as in the paper code
        return torch.zeros_like(a)
    std = a.std() if a.numel() > 1 else torch.zeros((), dtype=a.dtype, device=a.device)
    return torch.sigmoid((a - a.mean()) / (std + EPS))


def _trainable(model_or_params: nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    params = (
        model_or_params.parameters() if isinstance(model_or_params, nn.Module) else model_or_params
    )
    return [p for p in params if p.requires_grad]


class SpiderReference:
    """Paper-style SPIDER: ``step()`` after every ``optimizer.step()``.

    Args:
        model_or_params: a module (its trainable parameters are used) or an iterable of tensors.
        dtype: precision of θ₀, I_pre, G and all arithmetic (float32: the paper code).
    """

    def __init__(
        self,
        model_or_params: nn.Module | Iterable[torch.Tensor],
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.dtype = dtype
        self.params = _trainable(model_or_params)
        self.theta0 = [p.detach().to(dtype, copy=True) for p in self.params]
        self.i_pre = [importance(t) for t in self.theta0]
        self.G = [torch.zeros_like(t) for t in self.theta0]
        # Per tensor, after the last step: (fraction of elements with c > 0, mean c); None if the
        # tensor was not updated.
        self.last_stats: list[tuple[float, float] | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        for i, (p, theta0, i_pre, G) in enumerate(
            zip(self.params, self.theta0, self.i_pre, self.G, strict=True)
        ):
            self.last_stats[i] = None
            if p.grad is None:
                continue
            G += p.grad.to(self.dtype)
            i_ft = importance(G)
            c = torch.where(i_pre < i_ft, i_ft / (i_pre + i_ft), torch.zeros_like(i_ft))
            nonzero = c[c != 0]
            if nonzero.numel() == 0:  # host sync
                continue
            c = torch.clamp(c / nonzero.mean(), max=1.0)
            p.copy_((theta0 + c * (p.to(self.dtype) - theta0)).to(p.dtype))
            self.last_stats[i] = ((c > 0).double().mean().item(), c.double().mean().item())


def magnitude_mask(theta0: torch.Tensor, ratio: float) -> torch.Tensor:
    """Bool mask of theta0's shape: True on the ``floor(ratio · numel)`` elements of largest
    |theta0|, ties broken towards the lower flat index (a stable descending sort)."""
    k = int(ratio * theta0.numel())
    order = torch.sort(theta0.abs().flatten(), descending=True, stable=True).indices
    mask = torch.zeros(theta0.numel(), dtype=torch.bool, device=theta0.device)
    mask[order[:k]] = True
    return mask.view(theta0.shape)


class MagnitudeMaskReference:
    """The paper code's baseline: per tensor, the ``ratio`` largest-|θ₀| elements are pinned,
    ``w ← θ₀ ⊙ M + w ⊙ (1 − M)`` after every step (parameters without a gradient are skipped)."""

    def __init__(
        self, model_or_params: nn.Module | Iterable[torch.Tensor], ratio: float = 0.5
    ) -> None:
        self.params = _trainable(model_or_params)
        self.theta0 = [p.detach().clone() for p in self.params]
        self.masks = [magnitude_mask(t, ratio) for t in self.theta0]

    @torch.no_grad()
    def step(self) -> None:
        for p, theta0, mask in zip(self.params, self.theta0, self.masks, strict=True):
            if p.grad is None:
                continue
            m = mask.to(p.dtype)
            p.copy_(theta0 * m + p * (1 - m))
