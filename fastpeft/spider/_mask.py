"""MagnitudeMask: the SPIDER paper code's baseline (SPEC §6) with Spider's step()/state API."""

from __future__ import annotations

from typing import Any

import torch

from . import _params
from ._params import ModelOrParams

_FORMAT = "fastpeft.magnitude_mask/1"


def top_magnitude_mask(t: torch.Tensor, ratio: float) -> torch.Tensor:
    """Bool mask of t's shape, True on the ``floor(ratio · numel)`` elements of largest |t|, ties
    at the threshold going to the lowest flat indices. O(numel) memory: a k-th value threshold,
    then a running count of the tied elements (no full sort)."""
    a = t.detach().abs().flatten()
    n = a.numel()
    k = int(ratio * n)
    if k <= 0 or n == 0:
        return torch.zeros(t.shape, dtype=torch.bool, device=t.device)
    if k >= n:
        return torch.ones(t.shape, dtype=torch.bool, device=t.device)
    v = torch.kthvalue(a, n - k + 1).values  # the k-th largest, kept on the device
    above = a > v
    tied = a == v
    need = k - above.sum()
    mask = above | (tied & (torch.cumsum(tied, 0) <= need))
    return mask.view(t.shape)


class MagnitudeMask:
    """Pins, per tensor, the ``ratio`` fraction of elements with the largest |θ₀|: after every
    step ``w ← θ₀ ⊙ M + w ⊙ (1 − M)`` (SPEC §6's baseline). Call :meth:`step` after
    ``optimizer.step()``; parameters without a gradient this step are skipped.

    State: θ₀ in the parameter's dtype and M as a bool tensor (1 byte per element). Under FSDP2
    the mask is computed once from the full tensor (one all-gather per parameter at
    construction) and each rank keeps its shard.

    Args:
        model_or_params: a module or an iterable of tensors or (name, tensor) pairs (trainable
            ones are used).
        ratio: fraction of elements pinned per tensor, in [0, 1] (floor(ratio · numel) elements).
    """

    def __init__(self, model_or_params: ModelOrParams, ratio: float = 0.5) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        named = _params.collect(model_or_params, owner="MagnitudeMask")
        if not named:
            raise ValueError("MagnitudeMask: no trainable parameters")
        _params.refuse_deepspeed([p for _, p in named], "MagnitudeMask")
        self.ratio = ratio
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.steps = 0
        with torch.no_grad():
            self.theta0, self.masks = [], []
            for name, p in named:
                t = _params.local(p)
                _params.check_local(name, t)
                self.theta0.append(t.clone())
                self.masks.append(self._local_mask(p, ratio))

    @staticmethod
    def _local_mask(p: torch.Tensor, ratio: float) -> torch.Tensor:
        if not _params.shard_groups(p):
            return top_magnitude_mask(_params.local(p), ratio)
        from torch.distributed.tensor import distribute_tensor

        full = top_magnitude_mask(p.full_tensor(), ratio).to(torch.uint8)
        # Every rank holds the same full mask: src_data_rank=None splits it locally, no traffic.
        shard = distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None)
        return shard.to_local().bool().contiguous()

    def follow(self, i: int, device: torch.device) -> None:
        """Move parameter i's θ₀ and mask to `device` if the model moved after construction."""
        if self.theta0[i].device != device:
            self.theta0[i] = self.theta0[i].to(device)
            self.masks[i] = self.masks[i].to(device)

    @torch.no_grad()
    def step(self) -> None:
        """Re-pin the masked elements of every parameter that has a gradient. With no gradient
        on any of them it warns and changes nothing (see :meth:`Spider.step`)."""
        _params.refuse_deepspeed(self.params[:1], "MagnitudeMask.step()")
        if all(p.grad is None for p in self.params):
            _params.warn_no_gradients("MagnitudeMask", len(self.params))
            return
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            w = _params.local(p)
            self.follow(i, w.device)
            torch.where(self.masks[i], self.theta0[i], w, out=w)
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        """θ₀ and the masks (references to the live rank-local tensors) and the step count."""
        return {
            "format": _FORMAT,
            "names": list(self.names),
            "ratio": self.ratio,
            "theta0": list(self.theta0),
            "masks": list(self.masks),
            "steps": self.steps,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (same parameters, same order)."""
        if state.get("format") != _FORMAT or list(state["names"]) != self.names:
            raise ValueError("MagnitudeMask.load_state_dict: not a state of these parameters")
        for i, name in enumerate(self.names):
            _params.restore_tensor(self.theta0[i], state["theta0"][i], f"{name} theta0")
            _params.restore_tensor(self.masks[i], state["masks"][i], f"{name} mask")
        self.ratio = float(state["ratio"])
        self.steps = int(state["steps"])
