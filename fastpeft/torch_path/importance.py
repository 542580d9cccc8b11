"""PyTorch path of the SPIDER passes: the portable fallback and the readable statement of the
numerics every backend follows (fastpeft/spider/_spider.py states the passes).

- Sums in float64; per-tensor scalars (mean, 1/(std + 1e-12)) derived in float64 from a moments
  row (Σ|x|, Σx², numel) and rounded once to float32; per-element math in float32.
- sigmoid is evaluated as e = exp(−|z|), I = 1/(1+e) for z ≥ 0 and e/(1+e) below: no overflow,
  and far-negative z keeps tiny (denormal) values down to z ≈ −103 instead of flushing to 0 at
  z ≈ −88, so the I_pre < I_ft comparison follows the float64 reference further.

The reductions use multi-tensor ``torch._foreach_norm`` kernels; the per-element passes are a few
vectorised ops per tensor with every per-tensor scalar kept on the device (no host syncs), so on a
GPU this path launches O(tensors) kernels, unlike the Triton/CUDA ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..ops import _counters

EPS = 1e-12


def upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without making the host wait: to a GPU through pinned memory
    with ``non_blocking`` (a plain ``.to()`` from pageable memory synchronises)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def moments(tensors: Sequence[torch.Tensor], numels: torch.Tensor) -> torch.Tensor:
    """[n, 3] float64 rows (Σ|x|, Σx², numel) of the tensors; ``numels`` is the [n] float64 numel
    column, on the tensors' device (cached by the caller: building it would be a host copy)."""
    if len(tensors) == 0:
        return torch.zeros((0, 3), dtype=torch.float64, device=numels.device)
    s1 = torch.stack(torch._foreach_norm(list(tensors), 1, dtype=torch.float64))
    s2 = torch.stack(torch._foreach_norm(list(tensors), 2, dtype=torch.float64)).square()
    return torch.stack([s1, s2, numels], dim=1)


def r_stats(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-tensor scalars of R from moments rows [n, 3] float64: (mean [n] fp32, scale =
    1/(std + EPS) [n] fp32, nonzero [n] bool). Unbiased std; std := 0 for numel ≤ 1."""
    s1, s2, n = m.unbind(1)
    mean = torch.where(n > 0, s1 / n.clamp_min(1), 0.0)
    var = torch.where(n > 1, (s2 - s1 * mean) / (n - 1).clamp_min(1), 0.0)
    var = torch.where(var > 0, var, 0.0)  # rounding can make it slightly negative
    scale = 1.0 / (var.sqrt() + EPS)
    return mean.float(), scale.float(), s1 > 0


def importance(a: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, nonzero: torch.Tensor):
    """R elementwise for a = |T| (float32, any shape) and 0-d per-tensor scalars."""
    z = (a - mean) * scale
    e = torch.exp(-z.abs())
    r = torch.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return torch.where(nonzero, r, 0.0)


def c_raw(
    theta0: torch.Tensor, G: torch.Tensor, pre: tuple, ft: tuple, i: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_raw, selected) of tensor i, float32 / bool of its shape; pre/ft are r_stats tuples."""
    ip = importance(theta0.float().abs(), pre[0][i], pre[1][i], pre[2][i])
    ift = importance(G.abs(), ft[0][i], ft[1][i], ft[2][i])
    sel = ip < ift
    return torch.where(sel, ift / torch.where(sel, ip + ift, 1.0), 0.0), sel


def inverse_means(sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From select sums [n, 2] (Σc_raw, count): (1/m [n] fp32, 0 where count is 0; active [n])."""
    total, count = sel.unbind(1)
    active = count > 0
    inv_m = torch.where(active, count / torch.where(active, total, 1.0), 0.0)
    return inv_m.float(), active


def accumulate_(
    G: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], numels: torch.Tensor
) -> torch.Tensor:
    """G[i] += grads[i] (float32 += any float dtype), then the moments of the new G [n, 3]."""
    if len(G):
        torch._foreach_add_(list(G), list(grads))
    return moments(G, numels)


def select_sums(
    theta0: Sequence[torch.Tensor],
    G: Sequence[torch.Tensor],
    moments_pre: torch.Tensor,
    moments_ft: torch.Tensor,
) -> torch.Tensor:
    """[n, 2] float64 rows (Σ c_raw, count(c_raw > 0)) per tensor."""
    pre, ft = r_stats(moments_pre), r_stats(moments_ft)
    rows = []
    for i, (t0, g) in enumerate(zip(theta0, G, strict=True)):
        c, sel = c_raw(t0, g, pre, ft, i)
        rows.append(torch.stack([c.sum(dtype=torch.float64), sel.sum(dtype=torch.float64)]))
    if not rows:
        return torch.zeros((0, 2), dtype=torch.float64, device=moments_pre.device)
    return torch.stack(rows)


def c_values(
    theta0: Sequence[torch.Tensor],
    G: Sequence[torch.Tensor],
    moments_pre: torch.Tensor,
    moments_ft: torch.Tensor,
    sel: torch.Tensor,
) -> list[torch.Tensor]:
    """c = min(c_raw / m, 1) per tensor (float32, each tensor's shape); all zeros for a tensor
    with nothing selected (which the blend leaves unchanged)."""
    pre, ft = r_stats(moments_pre), r_stats(moments_ft)
    inv_m, _ = inverse_means(sel)
    out = []
    for i, (t0, g) in enumerate(zip(theta0, G, strict=True)):
        c, _ = c_raw(t0, g, pre, ft, i)
        out.append((c * inv_m[i]).clamp_max(1.0))
    return out


def blend_(
    w: Sequence[torch.Tensor],
    theta0: Sequence[torch.Tensor],
    G: Sequence[torch.Tensor],
    moments_pre: torch.Tensor,
    moments_ft: torch.Tensor,
    sel: torch.Tensor,
) -> None:
    """In place w[i] ← θ₀ + c ⊙ (w − θ₀) in float32 (float64 for float64 parameters), stored in
    w's dtype; tensors whose count is 0 keep their values bit for bit."""
    _, active = inverse_means(sel)
    cs = c_values(theta0, G, moments_pre, moments_ft, sel)
    for i, (p, t0, c) in enumerate(zip(w, theta0, cs, strict=True)):
        dtype = torch.promote_types(p.dtype, torch.float32)
        t = t0.to(dtype)
        p.copy_(torch.where(active[i], t + c * (p.to(dtype) - t), p))


def adamw_value(
    p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, row: torch.Tensor
) -> torch.Tensor:
    """AdamW's step for one tensor with hyper row (1 − lr·λ, lr / bc₁, β₁, β₂, ε, √bc₂)
    (float64): the moments m and v updated in place, and p's updated value returned in float32
    (float64 for float64 parameters), unrounded and not written (the fused optimizers' shared
    first half)."""
    dtype = torch.promote_types(p.dtype, torch.float32)
    decay, step_size, beta1, beta2, eps, bc2_sqrt = row.unbind()
    g32, m32 = g.to(dtype), m.to(dtype)
    m32 = m32 + (1 - beta1).to(dtype) * (g32 - m32)
    v32 = v.to(dtype) * beta2.to(dtype) + (1 - beta2).to(dtype) * (g32 * g32)
    denom = v32.sqrt() / bc2_sqrt.to(dtype) + eps.to(dtype)
    m.copy_(m32)
    v.copy_(v32)
    return p.to(dtype) * decay.to(dtype) - step_size.to(dtype) * (m32 / denom)


def adamw_blend_(
    w: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avg: Sequence[torch.Tensor],
    exp_avg_sq: Sequence[torch.Tensor],
    theta0: Sequence[torch.Tensor],
    G: Sequence[torch.Tensor],
    hyper: torch.Tensor,
    moments_pre: torch.Tensor,
    moments_ft: torch.Tensor,
    sel: torch.Tensor,
) -> None:
    """SpiderAdamW's fused pass, in place: per tensor i, AdamW's update of the moments and of
    w[i] with hyper[i] (`adamw_value`), then the blend of the updated value (as `blend_`; a
    tensor whose count is 0 takes the AdamW value alone). One rounding to w's dtype at the end."""
    _, active = inverse_means(sel)
    cs = c_values(theta0, G, moments_pre, moments_ft, sel)
    rows = zip(w, grads, exp_avg, exp_avg_sq, theta0, cs, strict=True)
    for i, (p, g, m, v, t0, c) in enumerate(rows):
        x = adamw_value(p, g, m, v, hyper[i])
        t = t0.to(x.dtype)
        p.copy_(torch.where(active[i], t + c.to(x.dtype) * (x - t), x))


def masked_adamw_(
    w: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avg: Sequence[torch.Tensor],
    exp_avg_sq: Sequence[torch.Tensor],
    theta0: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    hyper: torch.Tensor,
) -> None:
    """MagnitudeMaskAdamW's pass, in place: per tensor i, AdamW's update (`adamw_value`), then
    w[i] ← θ₀ where masks[i] (bool) pins the element, else the AdamW value rounded once."""
    rows = zip(w, grads, exp_avg, exp_avg_sq, theta0, masks, strict=True)
    for i, (p, g, m, v, t0, pinned) in enumerate(rows):
        x = adamw_value(p, g, m, v, hyper[i])
        p.copy_(torch.where(pinned, t0.to(x.dtype), x))


class Plan:
    """The three passes over fixed lists θ₀ / G, in PyTorch (backend "torch"); the interface every
    backend's `Plan` shares (see fastpeft/spider/_spider.py)."""

    def __init__(self, theta0, G, backend: str = "torch") -> None:
        self.theta0, self.G = list(theta0), list(G)
        self.backend = backend
        device = self.G[0].device if self.G else torch.device("cpu")
        numels = torch.tensor([t.numel() for t in self.G], dtype=torch.float64)
        self.numels = upload(numels, device)

    def accumulate(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        _counters.record("spider", self.backend)
        return accumulate_(self.G, grads, self.numels)

    def select_sums(
        self, pre: torch.Tensor, ft: torch.Tensor, keep_c_raw: bool = False
    ) -> torch.Tensor:
        # keep_c_raw is a CPU extension's option (native_path); here the fused pass recomputes.
        return select_sums(self.theta0, self.G, pre, ft)

    def blend(self, w, pre: torch.Tensor, ft: torch.Tensor, sel: torch.Tensor) -> None:
        blend_(list(w), self.theta0, self.G, pre, ft, sel)

    def adamw_blend(self, w, grads, exp_avg, exp_avg_sq, hyper, pre, ft, sel) -> None:
        _counters.record("spider_adamw", self.backend)
        adamw_blend_(w, grads, exp_avg, exp_avg_sq, self.theta0, self.G, hyper, pre, ft, sel)
