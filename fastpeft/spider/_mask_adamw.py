"""MagnitudeMaskAdamW: AdamW with the MagnitudeMask baseline's step (SPEC §6) fused into its
update.

``AdamW.step()`` then ``MagnitudeMask.step()`` makes two passes over the trainable elements: the
update (w, m, v read and written, g read: 7s bytes an element for s-byte parameters), then
w ← θ₀ ⊙ M + w ⊙ (1 − M) (w read and written, θ₀ and the 1-byte mask read: 3s + 1). One pass does
both: the AdamW value goes to w where the mask is off and θ₀ where it pins, rounded once (8s + 1
bytes: 17 against 21 for bf16). It is the SpiderAdamW pass with a stored selection in place of
SPIDER's computed one: the same AdamW code and chunk tables (kernels/spider_adamw.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .. import _ext
from ..ops import _counters
from ..torch_path.importance import masked_adamw_
from . import _params
from ._fused_adamw import FusedAdamW
from ._mask import MagnitudeMask

_BACKENDS = ("auto", "torch", "triton", "cpp")


class MagnitudeMaskAdamW(FusedAdamW):
    """AdamW (decoupled weight decay, as ``torch.optim.AdamW``) whose :meth:`step` also does
    :class:`MagnitudeMask`'s: the result equals ``AdamW.step()`` followed by
    ``MagnitudeMask.step()`` over the same parameters, up to float32 rounding (the AdamW value is
    computed in float32 and rounded once), in one pass instead of two.

    Args:
        params: as for torch.optim.AdamW: tensors, (name, tensor) pairs or param-group dicts.
            Parameters with ``requires_grad`` get a mask; θ₀ is taken here, so build the
            optimizer on the trained weights.
        ratio: fraction of each tensor's elements pinned at θ₀: the largest |θ₀|
            (:func:`top_magnitude_mask`), in [0, 1].
        lr, betas, eps, weight_decay: AdamW's (``lr`` a float; schedulers may change it).
        amsgrad, maximize: only False.
        backend: "auto" (Triton on a CUDA GPU for fp32, fp16 and bf16 parameters; on the CPU
            the C++ pass of ``fastpeft._C`` when it is built; PyTorch elsewhere), "triton",
            "cpp" (CPU) or "torch".

    State: AdamW's per parameter in ``state``, and the MagnitudeMask's (θ₀, masks) in
    :attr:`mask`; ``state_dict()`` is AdamW's with the mask's under ``"mask"``.
    """

    STATE_KEY = "mask"

    def __init__(
        self,
        params: Iterable[Any],
        ratio: float = 0.5,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        amsgrad: bool = False,
        maximize: bool = False,
        backend: str = "auto",
    ) -> None:
        if backend not in _BACKENDS:
            raise ValueError(
                f"MagnitudeMaskAdamW: backend must be one of {_BACKENDS}, got {backend!r}"
            )
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
        self.mask = MagnitudeMask(self._named_params(), ratio=ratio)
        self.backend = backend
        self._plans: dict[tuple, Any] = {}
        self._built = True

    def _selection(self) -> MagnitudeMask:
        return self.mask

    def backend_for(self, device: torch.device, dtype: torch.dtype) -> str:
        """The pass parameters on `device` in `dtype` take: the one asked for, or by default
        "triton" on a CUDA GPU for the dtypes its kernel takes (fp32, fp16, bf16), "cpp" on the
        CPU where the extension is built, else "torch"."""
        if self.backend != "auto":
            return self.backend
        if device.type == "cuda":
            fits = dtype in (torch.float32, torch.float16, torch.bfloat16)
            return "triton" if fits else "torch"
        return "cpp" if device.type == "cpu" and _ext.available() else "torch"

    def _fused_step(self) -> None:
        params = self.mask.params
        _params.refuse_deepspeed(params[:1], "MagnitudeMaskAdamW.step()")
        self._refuse_sparse(params)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            if p.grad is not None:
                w = _params.local(p)
                groups.setdefault((w.device, w.dtype), []).append(i)
        if not groups:  # as torch.optim.AdamW: nothing to step, nothing counted
            return
        for (device, dtype), idx in groups.items():
            self._step_group(device, dtype, idx)
        self.mask.steps += 1

    def _step_group(self, device: torch.device, dtype: torch.dtype, idx: list[int]) -> None:
        for i in idx:
            self.mask.follow(i, device)
        params = [self.mask.params[i] for i in idx]
        w = [_params.local(p) for p in params]
        grads = [_params.local(p.grad) for p in params]
        theta0 = [self.mask.theta0[i] for i in idx]
        masks = [self.mask.masks[i] for i in idx]
        exp_avg, exp_avg_sq, hyper = self._advance(params, device)
        backend = self.backend_for(device, dtype)
        if backend == "triton":
            self._plan(device, dtype, idx, theta0).masked_adamw(
                w, [g.contiguous() for g in grads], exp_avg, exp_avg_sq, masks, hyper
            )
            return
        _counters.record("masked_adamw", backend)
        if backend == "cpp":
            grads = [g.contiguous() for g in grads]
            _ext.require().masked_adamw_(w, grads, exp_avg, exp_avg_sq, theta0, masks, hyper)
        else:
            masked_adamw_(w, grads, exp_avg, exp_avg_sq, theta0, masks, hyper)

    def _plan(self, device, dtype, idx: list[int], theta0: list[torch.Tensor]):
        """The Triton plan (chunk tables) of one (device, dtype) group's tensors, kept while the
        group's members and θ₀ tensors stay the same."""
        from ..triton_path.importance import Plan

        key = (device, dtype, tuple(idx), tuple(t.data_ptr() for t in theta0))
        if key not in self._plans:
            self._plans[key] = Plan(theta0, None, "triton")
        return self._plans[key]
