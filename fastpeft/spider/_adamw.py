"""SpiderAdamW: torch.optim.AdamW with SPIDER's step (SPEC §6) fused into its update.

``AdamW.step()`` then ``Spider.step()`` makes four passes over the trainable elements: AdamW's,
then SPIDER's three (G += g with its moments; the select sums; the blend). SPIDER's c depends on
G and θ₀ only, never on w, so its two reductions can run first and AdamW's update can feed the
blend in registers. SpiderAdamW runs three passes:

1. G += g and the per-tensor moments of G (Spider's pass 1);
2. Σ c_raw and count per tensor (Spider's pass 2; reads θ₀ and G);
3. the fused pass: AdamW's update of m, v and w, then w ← θ₀ + c ⊙ (w_AdamW − θ₀).

No pass can go: R(G)'s z-scores need the moments of the whole updated G before any c_raw, and
the normalisation m = mean(nonzero c_raw) needs every c_raw before any blend. Bytes per element
(s = the parameter's element size): 8 + s, then s + 4, then 8s + 4, in all 10s + 16 (36 for
bf16) against AdamW's 7s (14) plus Spider's 5s + 16 (26): one read of g, one read and write of
w and one launch set fewer, and no rounding of w between the update and the blend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..torch_path.importance import upload
from . import _params
from ._spider import Spider

_HYPER_COLUMNS = 6


def _check_hyper(lr: Any, betas: Any, eps: Any, weight_decay: Any, where: str) -> None:
    if isinstance(lr, torch.Tensor):
        raise TypeError(
            f"{where}: lr must be a Python float, got a tensor (a tensor lr is not supported; "
            "an LR scheduler sets a float each step)"
        )
    if not isinstance(lr, (int, float)) or not 0.0 <= lr or math.isnan(lr):
        raise ValueError(f"{where}: lr must be a float >= 0, got {lr!r}")
    if not isinstance(eps, (int, float)) or not 0.0 <= eps:
        raise ValueError(f"{where}: eps must be a float >= 0, got {eps!r}")
    if not isinstance(weight_decay, (int, float)) or not 0.0 <= weight_decay:
        raise ValueError(f"{where}: weight_decay must be a float >= 0, got {weight_decay!r}")
    if (
        not isinstance(betas, (tuple, list))
        or len(betas) != 2
        or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas)
    ):
        raise ValueError(f"{where}: betas must be two floats in [0, 1), got {betas!r}")


def hyper_row(group: dict, step: float) -> list[float]:
    """The fused pass's per-tensor scalars for one AdamW step number ``step`` (1-based) of a
    tensor in param group ``group``: (1 − lr·λ, lr / bc₁, β₁, β₂, ε, √bc₂), bc = 1 − βˢᵗᵉᵖ, as
    torch.optim.AdamW forms them (in float64)."""
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    _check_hyper(lr, (beta1, beta2), eps, wd, "SpiderAdamW param group")
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    return [1.0 - lr * wd, lr / bc1, beta1, beta2, eps, math.sqrt(bc2)]


class SpiderAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, as ``torch.optim.AdamW``) whose :meth:`step` also does
    SPIDER's (SPEC §6): the result equals ``AdamW.step()`` followed by ``Spider.step()`` over the
    same parameters, up to float32 rounding (the AdamW value is not rounded to the parameter's
    dtype before the blend), in three multi-tensor passes instead of four.

    Use it in place of AdamW and drop the separate Spider (and SpiderCallback): with the Hugging
    Face Trainer, pass ``optimizers=(SpiderAdamW(model.parameters(), lr=...), None)`` or return
    it from an overridden ``create_optimizer``. For any other optimizer keep :class:`Spider`.

    Args:
        params: as for torch.optim.AdamW: tensors, (name, tensor) pairs or param-group dicts.
            Parameters with ``requires_grad`` are SPIDER-tracked (θ₀ is taken here, so build the
            optimizer on the trained weights, after ``get_peft_model``/``patch``); fp32, fp16,
            bf16 (fp64 except on Triton), contiguous; FSDP2 DTensors work on their local shards.
        lr, betas, eps, weight_decay: AdamW's; ``lr`` a float (schedulers may change it per
            step and per group), tensors are rejected.
        amsgrad, maximize: only False (rejected otherwise: not implemented in the fused pass).
        backend: SPIDER's backend, as :class:`Spider` ("auto", "torch", "triton", "cpp",
            "cuda").

    State: AdamW's per parameter (``step``, ``exp_avg``, ``exp_avg_sq``, in the parameter's
    dtype, as torch keeps them) in ``state``, and the Spider state (θ₀, G, the θ₀ moments) in
    :attr:`spider`; ``state_dict()`` is AdamW's with the Spider one under ``"spider"``, and
    ``load_state_dict`` restores both, so resuming is exact.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        amsgrad: bool = False,
        maximize: bool = False,
        backend: str = "auto",
    ) -> None:
        _check_hyper(lr, betas, eps, weight_decay, "SpiderAdamW")
        if amsgrad:
            raise ValueError("SpiderAdamW: amsgrad=True is not supported; use amsgrad=False")
        if maximize:
            raise ValueError("SpiderAdamW: maximize=True is not supported; use maximize=False")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        self._built = False
        super().__init__(params, defaults)
        _params.refuse_deepspeed([p for _, p in self._named_params()], "SpiderAdamW")
        self.spider = Spider(self._named_params(), backend=backend)
        self._built = True

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_built", False):
            raise RuntimeError(
                "SpiderAdamW.add_param_group: parameters cannot be added after construction "
                "(SPIDER takes θ₀ when the optimizer is built); pass every group to the "
                "constructor"
            )
        super().add_param_group(param_group)

    def _named_params(self) -> list[tuple[str, torch.Tensor]]:
        """(name, parameter) of every parameter: its param_names entry when the groups were
        built from named parameters, else "<group>.<index>"."""
        named = []
        for g, group in enumerate(self.param_groups):
            names = group.get("param_names") or [f"{g}.{k}" for k in range(len(group["params"]))]
            named += list(zip(names, group["params"], strict=True))
        return named

    @property
    def backends(self) -> list[str]:
        """The SPIDER backend of each (device, dtype) group, e.g. ["cpp"]."""
        return self.spider.backends

    def _adamw_state(self, p: torch.Tensor) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            # As torch.optim.AdamW: a float32 CPU step count and moments in p's dtype.
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One AdamW step fused with one SPIDER step over every parameter that has a gradient
        (the others, and their G, are left alone, as both would leave them). Returns the
        closure's loss if a closure is given. No host synchronisation on a GPU (under FSDP2:
        SPIDER's two small all-reduces, so every rank must step)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Under DeepSpeed ZeRO (zero_allow_untested_optimizer) the tracked parameters never get a
        # .grad and this would silently step nothing.
        _params.refuse_deepspeed(self.spider.params[:1], "SpiderAdamW.step()")
        group_of = {id(p): group for group in self.param_groups for p in group["params"]}
        for p in self.spider.params:
            if p.grad is not None and p.grad.is_sparse:
                raise RuntimeError("SpiderAdamW does not support sparse gradients")
        stepped = False
        for ready in self.spider.reduce_groups(keep_c_raw=True):
            stepped = True
            exp_avg, exp_avg_sq, rows = [], [], []
            for i in ready.indices:
                p = self.spider.params[i]
                state = self._adamw_state(p)
                state["step"] += 1
                exp_avg.append(_params.local(state["exp_avg"]))
                exp_avg_sq.append(_params.local(state["exp_avg_sq"]))
                rows.append(hyper_row(group_of[id(p)], float(state["step"])))
            hyper = upload(torch.tensor(rows, dtype=torch.float64), ready.w[0].device)
            ready.plan.adamw_blend(
                ready.w, ready.grads, exp_avg, exp_avg_sq, hyper, ready.pre, ready.ft, ready.sel
            )
        if stepped:
            self.spider.steps += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        """AdamW's state dict plus ``"spider"``: :meth:`Spider.state_dict` (θ₀, G, ...)."""
        state = super().state_dict()
        state["spider"] = self.spider.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a SpiderAdamW over the same parameters."""
        state_dict = dict(state_dict)
        spider = state_dict.pop("spider", None)
        if spider is None:
            raise ValueError(
                "SpiderAdamW.load_state_dict: state_dict has no 'spider' entry (θ₀ and G); "
                "it is not a SpiderAdamW state (a plain AdamW one?)"
            )
        super().load_state_dict(state_dict)
        self.spider.load_state_dict(spider)
