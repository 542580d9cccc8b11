"""SPIDER importance passes (SPEC §6): backend choice and the per-backend "plans".

For a list of parameters w (any float dtype), their pre-trained copies θ₀ (w's dtype) and the
fp32 gradient sums G, one SPIDER step is three passes over all tensors::

    1. accumulate:  G += g;  moments_ft[i] = (Σ|G_i|, ΣG_i², numel_i)             [n, 3] fp64
    2. select_sums: sel[i] = (Σ c_raw, count(c_raw > 0)) over tensor i            [n, 2] fp64
                    c_raw = I_ft / (I_pre + I_ft) where I_pre < I_ft else 0,
                    I_pre = R(θ₀) from moments_pre[i], I_ft = R(G) from moments_ft[i]
    3. blend:       w ← θ₀ + min(c_raw / m, 1) ⊙ (w − θ₀), m = Σc_raw / count; tensors with
                    count 0 are left unchanged

with R(T) = sigmoid((|T| − mean) / (std + 1e-12)) (unbiased std from the moments row, 0 for a
1-element tensor; R = 0 for an all-zero tensor). The per-tensor sums are inputs of the next pass,
so a caller with sharded parameters all-reduces them between passes. c and I_pre are recomputed
inside the passes and never stored. There is no autograd here: these run after optimizer.step().

Backends: "torch" (multi-tensor reductions, per-tensor vectorised elementwise), "triton" (one
launch per pass per dtype group + two finalize launches), "cpp" (fastpeft._C on CPU,
at::parallel_for) and "cuda" (fastpeft._C's multi-tensor CUDA launcher). "auto": cuda if the
extension has CUDA kernels, else triton, on a GPU; cpp (else torch) on the CPU;
FASTPEFT_BACKEND overrides it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _ext, _triton, env
from . import _counters
from . import importance_torch as torch_impl

BACKENDS = ("auto", "torch", "triton", "cpp", "cuda")


def _extension_has_cuda() -> bool:
    mod = _ext.load()
    return mod is not None and bool(mod.has_cuda())


def resolve(backend: str, device: torch.device) -> str:
    """A concrete backend for tensors on ``device``; raises if it cannot run there."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        override = env.backend_override()
        if override is not None:
            if override not in BACKENDS[1:]:
                raise ValueError(
                    f"environment variable FASTPEFT_BACKEND must be one of {BACKENDS[1:]} for "
                    f"SPIDER, got {override!r}"
                )
            backend = override
        elif device.type == "cuda":
            backend = "cuda" if _extension_has_cuda() else "triton"
        else:
            backend = "cpp" if _ext.available() else "torch"
    if backend == "triton" and not _triton.usable_on(device):
        raise RuntimeError(f"SPIDER backend='triton': {_triton.why_unusable(device)}")
    if backend == "cpp":
        if device.type != "cpu":
            raise RuntimeError(f"SPIDER backend='cpp' runs on CPU tensors, not {device.type}")
        _ext.require()
    if backend == "cuda":
        if device.type != "cuda":
            raise RuntimeError(f"SPIDER backend='cuda' runs on CUDA tensors, not {device.type}")
        if not _extension_has_cuda():
            raise RuntimeError(
                "SPIDER backend='cuda': fastpeft._C was built without CUDA kernels; rebuild it "
                f"with a CUDA toolkit ({_ext.REBUILD_CMD}) or use backend='triton'"
            )
    return backend


class TorchPlan:
    """The passes in PyTorch; see fastpeft/ops/importance_torch.py."""

    backend = "torch"

    def __init__(self, theta0, G) -> None:
        self.theta0, self.G = list(theta0), list(G)
        device = self.G[0].device if self.G else torch.device("cpu")
        numels = torch.tensor([t.numel() for t in self.G], dtype=torch.float64)
        self.numels = torch_impl.upload(numels, device)

    def accumulate(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        _counters.record("spider", self.backend)
        return torch_impl.accumulate_(self.G, grads, self.numels)

    def select_sums(self, pre: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        return torch_impl.select_sums(self.theta0, self.G, pre, ft)

    def blend(self, w, pre: torch.Tensor, ft: torch.Tensor, sel: torch.Tensor) -> None:
        torch_impl.blend_(list(w), self.theta0, self.G, pre, ft, sel)


class ExtensionPlan:
    """The passes in fastpeft._C: csrc/cpu/spider.cpp (backend "cpp") or csrc/cuda/spider.cu
    (backend "cuda"); the extension validates every argument."""

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


class _CountedTritonPlan:
    """Wraps TritonPlan (imported lazily: it pulls in triton) to count executions."""

    backend = "triton"

    def __init__(self, theta0, G) -> None:
        from .importance_triton import TritonPlan

        self._plan = TritonPlan(theta0, G)

    def accumulate(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        _counters.record("spider", self.backend)
        return self._plan.accumulate(grads)

    def select_sums(self, pre: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        return self._plan.select_sums(pre, ft)

    def blend(self, w, pre: torch.Tensor, ft: torch.Tensor, sel: torch.Tensor) -> None:
        self._plan.blend(w, pre, ft, sel)


def make_plan(backend: str, theta0: Sequence[torch.Tensor], G: Sequence[torch.Tensor]):
    """A plan running the three passes over the fixed state lists θ₀ / G with a backend.

    Args:
        backend: "torch", "triton", "cpp" or "cuda" (see :func:`resolve`).
        theta0: pre-trained values of the parameters (contiguous, the parameters' shapes and
            dtypes: float32/float16/bfloat16, float64 too except on "triton"), one device.
        G: float32 gradient sums, same shapes.

    The plan's methods: ``accumulate(grads) -> moments_ft [n, 3]``, ``select_sums(moments_pre,
    moments_ft) -> [n, 2]`` and ``blend(w, moments_pre, moments_ft, sel)`` (w: the parameters'
    contiguous tensors, passed per call because a parameter's storage may be swapped).
    """
    if backend == "torch":
        return TorchPlan(theta0, G)
    if backend == "triton":
        return _CountedTritonPlan(theta0, G)
    if backend in ("cpp", "cuda"):
        return ExtensionPlan(theta0, G, backend)
    raise ValueError(f"no SPIDER plan for backend {backend!r}")


def moments(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """[n, 3] float64 rows (Σ|x|, Σx², numel): fastpeft._C.abs_moments where it runs (fixed
    reduction order), else multi-tensor torch norms. Used once, for the θ₀ statistics."""
    tensors = list(tensors)
    if not tensors:
        return torch.zeros((0, 3), dtype=torch.float64)
    device = tensors[0].device
    if _ext.available() and (device.type == "cpu" or _extension_has_cuda()):
        return _ext.abs_moments(tensors)
    numels = torch.tensor([t.numel() for t in tensors], dtype=torch.float64).to(device)
    return torch_impl.moments(tensors, numels)
