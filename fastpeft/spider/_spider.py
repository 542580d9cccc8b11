"""Spider: SPIDER importance-aware weight allocation (SPEC §6) as a post-optimizer step."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import dispatch
from ..torch_path import importance as torch_impl
from . import _params
from ._moments import moments
from ._params import ModelOrParams

_FORMAT = "fastpeft.spider/1"
_MAX_PLANS = 8  # cached plans per group (one per distinct set of parameters that had gradients)


@dataclass
class _Group:
    """Tracked tensors sharing device, dtype and shard groups: one plan launch set per pass."""

    indices: list[int]
    device: torch.device
    dtype: torch.dtype
    shard_groups: tuple[Any, ...]
    pre: torch.Tensor  # [k, 3] float64 moments of θ₀ (all-reduced over the shards)
    backend: str = ""
    plans: dict[tuple[int, ...], tuple[Any, torch.Tensor]] = field(default_factory=dict)


@dataclass
class Reduced:
    """A group's tensors that have a gradient, after passes 1 and 2: what the blend needs."""

    indices: list[int]  # positions in Spider.params
    plan: Any
    pre: torch.Tensor  # [k, 3] float64 moments of θ₀
    ft: torch.Tensor  # [k, 3] float64 moments of the updated G
    sel: torch.Tensor  # [k, 2] float64 (Σ c_raw, count)
    w: list[torch.Tensor]  # the parameters' local storage
    grads: list[torch.Tensor]  # their local gradients, contiguous


class Spider:
    """SPIDER (SPEC §6): call :meth:`step` after every ``optimizer.step()``.

    Keeps θ₀ (each trainable parameter's value at construction, in its dtype) and G (the fp32 sum
    of the gradients of all steps), and after each step moves every parameter towards θ₀:
    ``w ← θ₀ + c ⊙ (w − θ₀)`` with c = min(c_raw / mean(c_raw ≠ 0), 1), c_raw = I_ft /
    (I_pre + I_ft) where the importance of G exceeds that of θ₀, else 0. I_pre lives as two
    cached scalars per tensor, c is recomputed inside the passes; neither is stored.

    Args:
        model_or_params: a module (its parameters with ``requires_grad``), or an iterable of
            tensors or (name, tensor) pairs. fp32/fp16/bf16 (fp64 except on Triton), contiguous;
            FSDP2 (DTensor) parameters work on their local shards, with the per-tensor sums
            all-reduced over the shard groups so results equal a single-process run.
            Parameters a DeepSpeed ZeRO optimizer manages are refused (at construction or at
            the first step): use :class:`DeepSpeedSpider` there.
        backend: "auto" (CUDA: the CUDA extension if built, else Triton; CPU: the C++ extension,
            else PyTorch), "torch", "triton", "cpp" or "cuda".

    Per step and (device, dtype) group: three passes of a fixed number of launches, no host
    synchronisation (under FSDP2: two small all-reduces, so every rank must step, with gradients
    for the same parameters). Parameters with no gradient this step are left unchanged (and so is
    their G). Construct it after the model is on its training device; if the parameters later
    move, the state follows at the next step. State: θ₀ + G = 2 + 4 bytes per bf16 parameter.
    """

    def __init__(self, model_or_params: ModelOrParams, backend: str = "auto") -> None:
        named = _params.collect(model_or_params, owner="Spider")
        if not named:
            raise ValueError("Spider: no trainable parameters (none has requires_grad=True)")
        _params.refuse_deepspeed([p for _, p in named], "Spider")
        dispatch.check_backend_name(backend)
        self._backend = backend
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.steps = 0
        with torch.no_grad():
            locals_ = [_params.local(p) for p in self.params]
            for name, t in zip(self.names, locals_, strict=True):
                _params.check_local(name, t)
            self.theta0 = [t.clone() for t in locals_]
            self.G = [torch.zeros_like(t, dtype=torch.float32) for t in locals_]
        keys: dict[tuple, list[int]] = {}
        for i, (p, t) in enumerate(zip(self.params, locals_, strict=True)):
            groups = _params.shard_groups(p)
            keys.setdefault((t.device, t.dtype, tuple(id(g) for g in groups)), []).append(i)
        self._groups: list[_Group] = []
        for (device, dtype, _), idx in keys.items():
            groups = _params.shard_groups(self.params[idx[0]])
            pre = moments([self.theta0[i] for i in idx]).to(device)
            _params.all_reduce_(pre, groups)
            self._groups.append(_Group(idx, device, dtype, groups, pre))
        for g in self._groups:
            g.backend = self._resolve(g)

    def _resolve(self, group: _Group) -> str:
        return dispatch.resolve("spider", self._backend, group.device, group.dtype)

    @property
    def backends(self) -> list[str]:
        """The backend of each (device, dtype) group, e.g. ["cpp"]."""
        return [g.backend for g in self._groups]

    # ------------------------------------------------------------------------------------------

    def _plan(self, group: _Group, active: tuple[int, ...]) -> tuple[Any, torch.Tensor]:
        """The plan over the group's tensors at positions ``active``, and their θ₀ moments."""
        hit = group.plans.get(active)
        if hit is None:
            if len(group.plans) >= _MAX_PLANS:
                group.plans.clear()
            idx = [group.indices[k] for k in active]
            plan = dispatch.implementation("spider", group.backend).Plan(
                [self.theta0[i] for i in idx], [self.G[i] for i in idx], group.backend
            )
            pre = group.pre
            if len(active) != len(group.indices):
                rows = torch_impl.upload(torch.tensor(active, dtype=torch.int64), group.device)
                pre = pre.index_select(0, rows)
            hit = group.plans[active] = (plan, pre.contiguous())
        return hit

    def _follow_device(self, group: _Group) -> None:
        # The model was moved after construction (e.g. by the HF Trainer): move the state too.
        device = _params.local(self.params[group.indices[0]]).device
        if device == group.device:
            return
        for i in group.indices:
            self.theta0[i] = self.theta0[i].to(device)
            self.G[i] = self.G[i].to(device)
        group.pre = group.pre.to(device)
        group.device = device
        group.backend = self._resolve(group)
        group.plans.clear()

    def reduce_groups(self, keep_c_raw: bool = False) -> Iterator[Reduced]:
        """Passes 1 and 2 of every group with a gradient on any of its tensors: G += g with the
        moments of G, then the select sums, each all-reduced over the shards. What is left is
        the blend (:meth:`step`; SpiderAdamW fuses it into its AdamW update, and asks the CPU
        extension to keep c_raw for it: ``keep_c_raw``)."""
        for group in self._groups:
            ready = self._reduce(group, keep_c_raw)
            if ready is not None:
                yield ready

    def _reduce(self, group: _Group, keep_c_raw: bool) -> Reduced | None:
        self._follow_device(group)
        grads = [_params.grad_of(self.params[i]) for i in group.indices]
        active = tuple(k for k, g in enumerate(grads) if g is not None)
        if not active:
            return None
        plan, pre = self._plan(group, active)
        ft = plan.accumulate([grads[k] for k in active])
        _params.all_reduce_(ft, group.shard_groups)
        sel = plan.select_sums(pre, ft, keep_c_raw=keep_c_raw)
        _params.all_reduce_(sel, group.shard_groups)
        indices = [group.indices[k] for k in active]
        w = [_params.local(self.params[i]) for i in indices]
        return Reduced(indices, plan, pre, ft, sel, w, [grads[k] for k in active])

    @torch.no_grad()
    def step(self) -> None:
        """Apply one SPIDER step: G += g, compute c, w ← θ₀ + c ⊙ (w − θ₀). Call it after
        ``optimizer.step()`` and before the gradients are zeroed.

        When no tracked parameter has a gradient it warns (UserWarning) and changes nothing,
        ``steps`` included. Not an error: a step whose batch never reached the tracked parameters
        (say, only the projector is tracked and the batch is text-only) is legitimate, and a
        raise there would stop a Trainer run (SpiderCallback calls this after every optimizer
        step) halfway. Every time it happens it is the same message, so Python's default filter
        shows it once, which is enough to expose a step() placed before backward() or after
        zero_grad(), or a Spider built on parameters the model does not train."""
        # Built before deepspeed.initialize, the parameters turn DeepSpeed's later (the first
        # one tells: ZeRO takes every trainable parameter).
        _params.refuse_deepspeed(self.params[:1], "Spider.step()")
        if all(p.grad is None for p in self.params):
            _params.warn_no_gradients("Spider", len(self.params))
            return
        for ready in self.reduce_groups():
            ready.plan.blend(ready.w, ready.pre, ready.ft, ready.sel)
        self.steps += 1

    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def stats(self) -> dict[str, dict[str, float]]:
        """Per tracked parameter, for logging: ``selected`` (fraction of elements with c > 0) and
        ``mean_c`` (mean of c over all elements) as the current θ₀ and G give them, i.e. what the
        last step applied. A tensor with nothing selected (left unchanged) reports 0 and 0.
        Runs extra passes and synchronises with the device; not for every step. Under FSDP2 it
        is a collective (all-reduces): call it on every rank."""
        out: dict[str, dict[str, float]] = {}
        for group in self._groups:
            self._follow_device(group)
            theta0 = [self.theta0[i] for i in group.indices]
            G = [self.G[i] for i in group.indices]
            numels = torch.tensor([t.numel() for t in G], dtype=torch.float64).to(group.device)
            ft = _params.all_reduce_(torch_impl.moments(G, numels), group.shard_groups)
            sel = _params.all_reduce_(
                torch_impl.select_sums(theta0, G, group.pre, ft), group.shard_groups
            )
            cs = torch_impl.c_values(theta0, G, group.pre, ft, sel)
            sums = torch.stack(
                [
                    torch.stack([(c > 0).sum(dtype=torch.float64), c.sum(dtype=torch.float64)])
                    for c in cs
                ]
            )
            _params.all_reduce_(sums, group.shard_groups)
            rows = (sums / ft[:, 2:3].clamp_min(1)).tolist()
            for i, (selected, mean_c) in zip(group.indices, rows, strict=True):
                out[self.names[i]] = {"selected": selected, "mean_c": mean_c}
        return {n: out[n] for n in self.names}

    def state_dict(self) -> dict[str, Any]:
        """θ₀ and G (references to the live rank-local tensors, as torch optimizers do), the θ₀
        statistics and the step count. Under FSDP2 every rank saves its own shards."""
        pre = [None] * len(self.params)
        for group in self._groups:
            for k, i in enumerate(group.indices):
                pre[i] = group.pre[k]
        return {
            "format": _FORMAT,
            "names": list(self.names),
            "theta0": list(self.theta0),
            "G": list(self.G),
            "moments_pre": torch.stack([p.cpu() for p in pre]),
            "steps": self.steps,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore θ₀ and G saved by :meth:`state_dict` (same parameters, same order), so a
        resumed run continues exactly; the parameters themselves come from the model's own
        checkpoint."""
        if state.get("format") != _FORMAT:
            raise ValueError(f"not a Spider state dict (format {state.get('format')!r})")
        if list(state["names"]) != self.names:
            raise ValueError(
                "Spider.load_state_dict: the saved parameters differ from the tracked ones "
                f"({len(state['names'])} saved, {len(self.names)} tracked)"
            )
        for i, name in enumerate(self.names):
            _params.restore_tensor(self.theta0[i], state["theta0"][i], f"{name} theta0")
            _params.restore_tensor(self.G[i], state["G"][i], f"{name} G")
        pre = state["moments_pre"]
        for group in self._groups:
            group.pre.copy_(pre[group.indices].to(group.pre.device))
            group.plans.clear()
        self.steps = int(state["steps"])
