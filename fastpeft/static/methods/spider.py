"""SPIDER's static model over the bench's Llama-shaped trainable tensors, against one fused AdamW
step over the same elements (which reads the parameter, gradient and both moments and writes the
parameter and moments: 14 bytes per bf16 element with bf16 moments, 28 per fp32 element). Three
cases: Spider's three passes (and their finalize launches), run after AdamW's step; SpiderAdamW's
step, which is the whole optimizer step (Spider's passes 1 and 2, then the fused AdamW + blend
pass); and MagnitudeMaskAdamW's, one pass (AdamW's update with the pinned elements at θ₀)."""

from dataclasses import dataclass

import torch

from ...bench import plan
from .. import sequences as seq
from ._meta import DTYPES, meta

VARIANTS = [("bfloat16", 0.0), ("float32", 0.0)]  # the parameters' dtype


@dataclass(frozen=True)
class SpiderCase:
    shapes: tuple[tuple[int, ...], ...]
    # The fused optimizer whose whole step is modelled ("SpiderAdamW", "MagnitudeMaskAdamW"), or
    # "" for Spider's step after AdamW's.
    optimizer: str = ""

    @property
    def elements(self) -> int:
        return sum(int(torch.Size(s).numel()) for s in self.shapes)

    def name(self) -> str:
        what = f"{self.optimizer} step" if self.optimizer else "spider"
        return f"{what} {len(self.shapes)} tensors, {self.elements / 1e6:.1f}M elements"

    def fields(self) -> dict:
        step = self.optimizer or "Spider after AdamW"
        return {"tensors": len(self.shapes), "elements": self.elements, "step": step}


def cases() -> list[SpiderCase]:
    shapes, _, _ = plan.spider_settings(torch.device("cuda"), "full")
    shapes = tuple(tuple(s) for s in shapes)
    return [SpiderCase(shapes), SpiderCase(shapes, "SpiderAdamW"),
            SpiderCase(shapes, "MagnitudeMaskAdamW")]  # fmt: skip


def launches(case: SpiderCase, weights: str, dropout: float) -> None:
    from ...triton_path.importance import Plan

    dtype = DTYPES[weights]
    theta0 = [meta(*s, dtype=dtype) for s in case.shapes]
    hyper = meta(len(theta0), 6, dtype=torch.float64)
    if case.optimizer == "MagnitudeMaskAdamW":
        w, g, m, v = ([meta(*s, dtype=dtype) for s in case.shapes] for _ in range(4))
        masks = [meta(*s, dtype=torch.bool) for s in case.shapes]
        Plan(theta0, None).masked_adamw(w, g, m, v, masks, hyper)
        return
    G = [meta(*s, dtype=torch.float32) for s in case.shapes]
    plan_ = Plan(theta0, G)
    moments = meta(len(G), 3, dtype=torch.float64)
    ft = plan_.accumulate([meta(*s, dtype=dtype) for s in case.shapes])
    sel = plan_.select_sums(moments, ft)
    if not case.optimizer:
        plan_.blend([meta(*s, dtype=dtype) for s in case.shapes], moments, ft, sel)
        return
    w, g, m, v = ([meta(*s, dtype=dtype) for s in case.shapes] for _ in range(4))
    plan_.adamw_blend(w, g, m, v, hyper, moments, ft, sel)


def references(case: SpiderCase, weights: str, dropout: float) -> dict[str, list[seq.Op]]:
    per_element = 14 if DTYPES[weights].itemsize == 2 else 28
    return {"adamw": [seq.elementwise("fused AdamW step", case.elements * per_element, 0)]}
