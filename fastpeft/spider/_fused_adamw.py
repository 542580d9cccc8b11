"""The AdamW half the fused optimizers share (SpiderAdamW, MagnitudeMaskAdamW): argument checks,
AdamW's per-parameter state as torch.optim.AdamW keeps it, the per-tensor hyper rows their fused
passes take, and a state dict that carries the selection's own state beside AdamW's."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..torch_path.importance import upload
from . import _params


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


def hyper_row(group: dict, step: float, where: str = "SpiderAdamW") -> list[float]:
    """The fused passes' per-tensor scalars for one AdamW step number ``step`` (1-based) of a
    tensor in param group ``group``: (1 − lr·λ, lr / bc₁, β₁, β₂, ε, √bc₂), bc = 1 − βˢᵗᵉᵖ, as
    torch.optim.AdamW forms them (in float64)."""
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    _check_hyper(lr, (beta1, beta2), eps, wd, f"{where} param group")
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    return [1.0 - lr * wd, lr / bc1, beta1, beta2, eps, math.sqrt(bc2)]


class FusedAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, as ``torch.optim.AdamW``) whose subclass fuses a
    selection's step into the update (:meth:`_fused_step`). The selection's state (an object
    with ``state_dict``/``load_state_dict``) rides in the state dict under ``STATE_KEY``."""

    STATE_KEY = ""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        amsgrad: bool,
        maximize: bool,
    ) -> None:
        name = type(self).__name__
        _check_hyper(lr, betas, eps, weight_decay, name)
        if amsgrad:
            raise ValueError(f"{name}: amsgrad=True is not supported; use amsgrad=False")
        if maximize:
            raise ValueError(f"{name}: maximize=True is not supported; use maximize=False")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        self._built = False
        super().__init__(params, defaults)
        _params.refuse_deepspeed([p for _, p in self._named_params()], name)

    def _selection(self) -> Any:
        """The fused selection's object (its state goes under STATE_KEY)."""
        raise NotImplementedError

    def _fused_step(self) -> None:
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_built", False):
            raise RuntimeError(
                f"{type(self).__name__}.add_param_group: parameters cannot be added after "
                "construction (θ₀ is taken when the optimizer is built); pass every group to the "
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

    def _adamw_state(self, p: torch.Tensor) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            # As torch.optim.AdamW: a float32 CPU step count and moments in p's dtype.
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _advance(self, params: list[torch.Tensor], device: torch.device) -> tuple:
        """Count one AdamW step for each of `params`: (local exp_avg list, local exp_avg_sq list,
        hyper [n, 6] float64 on `device`)."""
        group_of = {id(p): group for group in self.param_groups for p in group["params"]}
        exp_avg, exp_avg_sq, rows = [], [], []
        for p in params:
            state = self._adamw_state(p)
            state["step"] += 1
            exp_avg.append(_params.local(state["exp_avg"]))
            exp_avg_sq.append(_params.local(state["exp_avg_sq"]))
            rows.append(hyper_row(group_of[id(p)], float(state["step"]), type(self).__name__))
        return exp_avg, exp_avg_sq, upload(torch.tensor(rows, dtype=torch.float64), device)

    def _refuse_sparse(self, params: list[torch.Tensor]) -> None:
        for p in params:
            if p.grad is not None and p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One fused step over every parameter that has a gradient (the others are left alone).
        Returns the closure's loss if a closure is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._fused_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """AdamW's state dict plus the selection's state under STATE_KEY."""
        state = super().state_dict()
        state[self.STATE_KEY] = self._selection().state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of the same optimizer over the same parameters."""
        state_dict = dict(state_dict)
        extra = state_dict.pop(self.STATE_KEY, None)
        if extra is None:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: state_dict has no {self.STATE_KEY!r} "
                "entry (θ₀ and the selection's state); it is not this optimizer's state (a plain "
                "AdamW one?)"
            )
        super().load_state_dict(state_dict)
        self._selection().load_state_dict(extra)
