"""SPIDER's passes in fastpeft._C: csrc/cpu/spider.cpp (backend "cpp") and csrc/cuda/spider.cu
(backend "cuda"). The extension validates every argument."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _ext
from ..ops import _counters


class Plan:
    """The three passes over fixed lists θ₀ / G (see fastpeft/spider/_spider.py), and
    SpiderAdamW's fused third pass."""

    def __init__(self, theta0, G, backend: str) -> None:
        self.theta0, self.G = list(theta0), list(G)
        self.backend = backend
        self._C = _ext.require()

    def accumulate(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        _counters.record("spider", self.backend)
        return self._C.spider_accumulate(self.G, list(grads))

    def select_sums(self, pre: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        return self._C.spider_select_sums(self.theta0, self.G, pre, ft)

    def blend(self, w, pre: torch.Tensor, ft: torch.Tensor, sel: torch.Tensor) -> None:
        self._C.spider_blend_(list(w), self.theta0, self.G, pre, ft, sel)

    def adamw_blend(self, w, grads, exp_avg, exp_avg_sq, hyper, pre, ft, sel) -> None:
        """SpiderAdamW's fused pass (csrc/cpu/spider_adamw.cpp, csrc/cuda/spider_adamw.cu)."""
        _counters.record("spider_adamw", self.backend)
        self._C.spider_adamw_blend_(
            list(w), list(grads), list(exp_avg), list(exp_avg_sq), self.theta0, self.G,
            hyper, pre, ft, sel,
        )  # fmt: skip
