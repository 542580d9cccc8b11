"""Host side of the Triton SPIDER kernels: chunk and address tables, launches.

A :class:`Plan` serves one fixed list of tensors of one dtype on one device. The chunk
tables depend only on the sizes and are built once; each operand list travels as its first
tensor and a table of element offsets from it, rebuilt only when a data pointer changes
(gradients are often reallocated between steps) and uploaded from pinned memory without
blocking, so ``step()`` never waits for the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton

from ..kernels import importance as kernels
from ..kernels import spider_adamw as fused_kernels
from ..ops import _counters
from ..torch_path.importance import upload
from .launch import Target, launch, target_for

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# NOTE: untuned (no GPU was available when this was written). 16K-element chunks keep ~400K
# programs for a 7B model; 2048 lanes x 8 warps = 8 elements per thread per iteration. The
# interpreter runs every program serially in numpy, so it gets few, larger-lane chunks. Full
# chunks of 16-byte-aligned tensors stream with 16-byte loads and stores (checked in the sm_90
# PTX by tests/kernels/test_spider_vector_loads.py).
_GPU = dict(CHUNK=16384, BLOCK=2048, num_warps=8)
_CPU = dict(CHUNK=4096, BLOCK=1024)
_RBLOCK = 256


def launch_configs(target: Target) -> dict:
    """The pass launches' chunk and block sizes for `target`."""
    return dict(_CPU if target.interpreter else _GPU)


def supports(dtype: torch.dtype) -> bool:
    return dtype in _DTYPES


class Plan:
    """The three passes over fixed lists ``theta0`` (the parameters' dtype) and ``G`` (float32),
    all contiguous, one device, one dtype; the parameters come with each ``blend`` call. Without
    ``G`` the plan serves MagnitudeMaskAdamW's pass only (:meth:`masked_adamw`)."""

    def __init__(
        self,
        theta0: Sequence[torch.Tensor],
        G: Sequence[torch.Tensor] | None,
        backend: str = "triton",
    ) -> None:
        self.backend = backend
        self.theta0, self.G = list(theta0), list(G or [])
        self.n = len(self.theta0)
        self.device = self.theta0[0].device if self.n else torch.device("cpu")
        dtypes = {t.dtype for t in self.theta0}
        if len(dtypes) > 1 or not all(supports(d) for d in dtypes):
            raise ValueError(
                f"the Triton SPIDER plan takes one dtype of {list(_DTYPES)}, got {dtypes}"
            )
        self.dtype = self.theta0[0].dtype if self.n else torch.float32
        self.cfg = launch_configs(target_for(self.device))
        chunk = self.cfg["CHUNK"]
        numels = torch.tensor([t.numel() for t in self.theta0], dtype=torch.int64)
        n_chunks = (numels + chunk - 1) // chunk
        first = torch.cumsum(n_chunks, 0) - n_chunks
        total = int(n_chunks.sum())
        tensor_of = torch.repeat_interleave(torch.arange(self.n, dtype=torch.int32), n_chunks)
        start = (torch.arange(total, dtype=torch.int64) - first[tensor_of.long()]) * chunk
        self.total_chunks = total
        put = self._upload
        self.numels = put(numels)
        self.n_chunks, self.first_chunk = put(n_chunks), put(first)
        self.chunk_tensor, self.chunk_start = put(tensor_of), put(start)
        self._addr_keys: dict[str, tuple[int, ...]] = {}
        self._addr: dict[str, torch.Tensor] = {}

    def _upload(self, t: torch.Tensor) -> torch.Tensor:
        return upload(t, self.device)

    def _operands(self, lists: dict[str, Sequence[torch.Tensor]]) -> tuple[list, list, bool]:
        """(base tensors, offset tables, ALIGNED) of named operand lists for a pass launch:
        ALIGNED when every address is 16-byte aligned (the kernels then hint 16-byte words)."""
        aligned = all(x.data_ptr() % 16 == 0 for ts in lists.values() for x in ts)
        bases = [ts[0] for ts in lists.values()]
        offsets = [self._offsets(key, ts) for key, ts in lists.items()]
        return bases, offsets, aligned

    def _pass_args(self) -> tuple:
        return (self.chunk_tensor, self.chunk_start, self.numels)

    def _finalize(self, partial: torch.Tensor, width: int) -> torch.Tensor:
        out = torch.empty((self.n, width), dtype=torch.float64, device=self.device)
        launch(
            kernels.spider_finalize_kernel, (self.n,),
            partial, self.first_chunk, self.n_chunks, self.numels, out,
            WIDTH=width, WITH_NUMEL=width == 3, RBLOCK=_RBLOCK,
        )  # fmt: skip
        return out

    def _partials(self) -> torch.Tensor:
        return torch.empty((max(self.total_chunks, 1), 2), dtype=torch.float64, device=self.device)

    def accumulate(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        """G += grads (contiguous, θ₀'s dtype); returns the [n, 3] float64 moments of the new G."""
        _counters.record("spider", self.backend)
        if self.n == 0:
            return torch.zeros((0, 3), dtype=torch.float64, device=self.device)
        if len(grads) != self.n or any(
            g.dtype != self.dtype or g.numel() != t.numel() or not g.is_contiguous()
            for g, t in zip(grads, self.theta0, strict=False)
        ):
            raise ValueError("Plan.accumulate: grads must match theta0 (contiguous)")
        partial = self._partials()
        if self.total_chunks:
            bases, offsets, aligned = self._operands({"G": self.G, "g": grads})
            launch(
                kernels.spider_accumulate_kernel, (self.total_chunks,),
                *bases, *offsets, *self._pass_args(), partial, ALIGNED=aligned, **self.cfg,
            )  # fmt: skip
        return self._finalize(partial, 3)

    def select_sums(
        self, pre: torch.Tensor, ft: torch.Tensor, keep_c_raw: bool = False
    ) -> torch.Tensor:
        """[n, 2] float64 (Σ c_raw, count) per tensor. ``keep_c_raw`` is ignored: on a GPU the
        fused pass recomputing c_raw costs less than 8 more bytes per element."""
        if self.n == 0:
            return torch.zeros((0, 2), dtype=torch.float64, device=self.device)
        partial = self._partials()
        if self.total_chunks:
            bases, offsets, aligned = self._operands({"theta0": self.theta0, "G": self.G})
            launch(
                kernels.spider_select_kernel, (self.total_chunks,),
                *bases, *offsets, *self._pass_args(), pre, ft, partial,
                ALIGNED=aligned, **self.cfg,
            )  # fmt: skip
        return self._finalize(partial, 2)

    def blend(
        self, w: Sequence[torch.Tensor], pre: torch.Tensor, ft: torch.Tensor, sel: torch.Tensor
    ) -> None:
        """w ← θ₀ + c ⊙ (w − θ₀) in place (w: the parameters, contiguous, θ₀'s dtype)."""
        if self.n == 0 or self.total_chunks == 0:
            return
        if len(w) != self.n or any(
            p.dtype != self.dtype or p.numel() != t.numel()
            for p, t in zip(w, self.theta0, strict=False)
        ):
            raise ValueError("Plan.blend: w must match theta0 in length, sizes and dtype")
        bases, offsets, aligned = self._operands({"w": w, "theta0": self.theta0, "G": self.G})
        launch(
            kernels.spider_blend_kernel, (self.total_chunks,),
            *bases, *offsets, *self._pass_args(), pre, ft, sel, ALIGNED=aligned, **self.cfg,
        )  # fmt: skip

    def adamw_blend(self, w, grads, exp_avg, exp_avg_sq, hyper, pre, ft, sel) -> None:
        """SpiderAdamW's fused pass (kernels/spider_adamw.py): AdamW's update of w, exp_avg and
        exp_avg_sq (θ₀'s dtype, contiguous) with hyper [n, 6] float64, then the blend."""
        _counters.record("spider_adamw", self.backend)
        if self.n == 0 or self.total_chunks == 0:
            return
        lists = self._adamw_lists(w, grads, exp_avg, exp_avg_sq, "adamw_blend")
        lists.update(theta0=self.theta0, G=self.G)
        bases, offsets, aligned = self._operands(lists)
        launch(
            fused_kernels.spider_adamw_blend_kernel, (self.total_chunks,),
            *bases, *offsets, *self._pass_args(), hyper, pre, ft, sel,
            ALIGNED=aligned, **self.cfg,
        )  # fmt: skip

    def masked_adamw(self, w, grads, exp_avg, exp_avg_sq, masks, hyper) -> None:
        """MagnitudeMaskAdamW's pass (kernels/spider_adamw.py): AdamW's update of w, exp_avg and
        exp_avg_sq (θ₀'s dtype, contiguous) with hyper [n, 6] float64, the elements `masks`
        (bool, contiguous) pins set back to θ₀."""
        _counters.record("masked_adamw", self.backend)
        if self.n == 0 or self.total_chunks == 0:
            return
        lists = self._adamw_lists(w, grads, exp_avg, exp_avg_sq, "masked_adamw")
        if len(masks) != self.n or any(
            k.dtype != torch.bool or k.numel() != t.numel() or not k.is_contiguous()
            for k, t in zip(masks, self.theta0, strict=False)
        ):
            raise ValueError("Plan.masked_adamw: masks must be bool, contiguous, theta0's sizes")
        lists.update(theta0=self.theta0, pins=[k.view(torch.uint8) for k in masks])
        bases, offsets, aligned = self._operands(lists)
        launch(
            fused_kernels.masked_adamw_kernel, (self.total_chunks,),
            *bases, *offsets, *self._pass_args(), hyper, ALIGNED=aligned, **self.cfg,
        )  # fmt: skip

    def _adamw_lists(self, w, grads, exp_avg, exp_avg_sq, where: str) -> dict[str, list]:
        """The AdamW operand lists by name, each checked against θ₀ (dtype, sizes, contiguous)."""
        lists = {"w": w, "grads": grads, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        for name, ts in lists.items():
            if len(ts) != self.n or any(
                x.dtype != self.dtype or x.numel() != t.numel() or not x.is_contiguous()
                for x, t in zip(ts, self.theta0, strict=False)
            ):
                raise ValueError(f"Plan.{where}: {name} must match theta0 (contiguous)")
        return lists

    def _offsets(self, key: str, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Element offsets of `tensors` from the first one's data pointer (one dtype, so every
        difference is a whole number of elements), cached until a data pointer changes."""
        ptrs = tuple(t.data_ptr() for t in tensors)
        if self._addr_keys.get(key) != ptrs:
            size = tensors[0].element_size()
            offsets = torch.tensor([p - ptrs[0] for p in ptrs], dtype=torch.int64) // size
            self._addr[key] = self._upload(offsets)
            self._addr_keys[key] = ptrs
        return self._addr[key]


def chunk_count(numels: Sequence[int], device: torch.device) -> int:
    """Programs per pass launch for tensors of these sizes (for tests and launch accounting)."""
    chunk = launch_configs(target_for(device))["CHUNK"]
    return sum(triton.cdiv(n, chunk) for n in numels)
