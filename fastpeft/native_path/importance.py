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
        # CPU only: c_raw kept from pass 2 for the fused pass (fp32 like G), and whether the
        # last select_sums filled it.
        self._c_raw: list[torch.Tensor] = []
        self._c_raw_fresh = False

    def accumulate(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        _counters.record("spider", self.backend)
        return self._C.spider_accumulate(self.G, list(grads))

    def select_sums(
        self, pre: torch.Tensor, ft: torch.Tensor, keep_c_raw: bool = False
    ) -> torch.Tensor:
        """Pass 2. With ``keep_c_raw`` on the CPU, c_raw is also kept for the next
        :meth:`adamw_blend` (the CPU passes are bound by the sigmoids, not by memory: reading 4
        bytes per element there is cheaper than computing c_raw again)."""
        keep = keep_c_raw and self.backend == "cpp"
        if keep and not self._c_raw:
            self._c_raw = [torch.empty_like(g) for g in self.G]
        self._c_raw_fresh = keep
        return self._C.spider_select_sums(
            self.theta0, self.G, pre, ft, c_out=self._c_raw if keep else []
        )

    def blend(self, w, pre: torch.Tensor, ft: torch.Tensor, sel: torch.Tensor) -> None:
        self._C.spider_blend_(list(w), self.theta0, self.G, pre, ft, sel)

    def adamw_blend(self, w, grads, exp_avg, exp_avg_sq, hyper, pre, ft, sel) -> None:
        """SpiderAdamW's fused pass (csrc/cpu/spider_adamw.cpp, csrc/cuda/spider_adamw.cu)."""
        _counters.record("spider_adamw", self.backend)
        kept, self._c_raw_fresh = (self._c_raw if self._c_raw_fresh else []), False
        self._C.spider_adamw_blend_(
            list(w), list(grads), list(exp_avg), list(exp_avg_sq), self.theta0, self.G,
            hyper, pre, ft, sel, c_raw=kept,
        )  # fmt: skip
