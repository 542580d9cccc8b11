"""SPIDER's static model over the bench's Llama-shaped trainable tensors, against one fused AdamW
step over the same elements (which reads the parameter, gradient and both moments and writes the
parameter and moments: 14 bytes per bf16 element with bf16 moments, 28 per fp32 element). Two
cases: Spider's three passes (and their finalize launches), run after AdamW's step; and
SpiderAdamW's step, which is the whole optimizer step (Spider's passes 1 and 2, then the fused
AdamW + blend pass)."""

from dataclasses import dataclass

import torch

from ...bench import plan
from .. import sequences as seq
from ._meta import DTYPES, meta

VARIANTS = [("bfloat16", 0.0), ("float32", 0.0)]  # the parameters' dtype


@dataclass(frozen=True)
class SpiderCase:
    shapes: tuple[tuple[int, ...], ...]
    optimizer: bool = False  # SpiderAdamW's whole step, not Spider's step after AdamW's

    @property
    def elements(self) -> int:
        return sum(int(torch.Size(s).numel()) for s in self.shapes)

    def name(self) -> str:
        what = "SpiderAdamW step" if self.optimizer else "spider"
        return f"{what} {len(self.shapes)} tensors, {self.elements / 1e6:.1f}M elements"

    def fields(self) -> dict:
        step = "SpiderAdamW" if self.optimizer else "Spider after AdamW"
        return {"tensors": len(self.shapes), "elements": self.elements, "step": step}


def cases() -> list[SpiderCase]:
    shapes, _, _ = plan.spider_settings(torch.device("cuda"), "full")
    shapes = tuple(tuple(s) for s in shapes)
    return [SpiderCase(shapes), SpiderCase(shapes, optimizer=True)]


def launches(case: SpiderCase, weights: str, dropout: float) -> None:
    from ...triton_path.importance import Plan

    dtype = DTYPES[weights]
    theta0 = [meta(*s, dtype=dtype) for s in case.shapes]
    G = [meta(*s, dtype=torch.float32) for s in case.shapes]
    plan_ = Plan(theta0, G)
    moments = meta(len(G), 3, dtype=torch.float64)
    ft = plan_.accumulate([meta(*s, dtype=dtype) for s in case.shapes])
    sel = plan_.select_sums(moments, ft)
    if not case.optimizer:
        plan_.blend([meta(*s, dtype=dtype) for s in case.shapes], moments, ft, sel)
        return
    w, g, m, v = ([meta(*s, dtype=dtype) for s in case.shapes] for _ in range(4))
    hyper = meta(len(G), 6, dtype=torch.float64)
    plan_.adamw_blend(w, g, m, v, hyper, moments, ft, sel)


def references(case: SpiderCase, weights: str, dropout: float) -> dict[str, list[seq.Op]]:
    per_element = 14 if DTYPES[weights].itemsize == 2 else 28
    return {"adamw": [seq.elementwise("fused AdamW step", case.elements * per_element, 0)]}
