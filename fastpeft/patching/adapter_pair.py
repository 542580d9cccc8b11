"""Patcher for an MLP whose gate_proj and up_proj both carry pre-adapters (Paper A's placement).

The two pre-adapters see the same input x. The fused MLP forward computes both adapted inputs
with one op that reads x once, then runs the MLP as its class would (down(act(gate(u)) * up(v)))
with gate/up called through their plain `forward`, skipping only their pre-adapter hooks.
Applies to Llama-style MLPs (gate_proj, up_proj, down_proj, act_fn: Llama, Qwen2, Mistral, ...).
"""

import torch
import torch.nn as nn

from .. import functional
from ..adapters.hooks import pre_hook
from . import adapter as single
from . import base

_MLP_ATTRS = ("gate_proj", "up_proj", "down_proj", "act_fn")


def _pair(mlp: nn.Module):
    return mlp.gate_proj.fastpeft_pre_adapter, mlp.up_proj.fastpeft_pre_adapter


# The fused forward reads the member adapters' weights and runs gate_proj/up_proj's plain
# forward, past their hooks (zero3.py).
reads_child_parameters = True


def candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found = []
    for name, module in model.named_modules():
        if all(hasattr(module, a) for a in _MLP_ATTRS) and all(
            hasattr(getattr(module, p), "fastpeft_pre_adapter") for p in ("gate_proj", "up_proj")
        ):
            found.append((name, module))
    return found


def members(mlp: nn.Module) -> list[nn.Module]:
    """The two pre-adapters this MLP's fused forward computes itself: owned by the pair."""
    return list(_pair(mlp))


def ineligibility_reasons(mlp: nn.Module) -> list[str]:
    reasons = []
    first, second = _pair(mlp)
    for adapter in (first, second):
        reasons += single.ineligibility_reasons(adapter)
    if first.non_linearity != second.non_linearity or first.scaling != second.scaling:
        reasons.append("gate/up adapters differ in non-linearity or scaling")
    if first.dropout.p != second.dropout.p or first.down.weight.dtype != second.down.weight.dtype:
        reasons.append("gate/up adapters differ in dropout or dtype")
    for proj in (mlp.gate_proj, mlp.up_proj):
        if list(proj._forward_pre_hooks.values()) != [pre_hook] or proj._forward_hooks:
            reasons.append("gate/up projections carry other hooks (only the pre-adapter's allowed)")
            break
    return reasons


def fused_forward(self: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Replacement for the MLP's forward (bound per instance)."""
    state = base.state_of(self)
    first, second = _pair(self)
    reason = "extra forward arguments" if args or kwargs else None
    reason = reason or single.call_fallback_reason(first, x, None)
    reason = reason or (ineligibility_reasons(self) or [None])[0]
    if reason is not None:
        base.count(state, reason)
        return base.original_forward(self)(x, *args, **kwargs)
    base.count(state)
    with base.autocast_off(x):
        u, v = functional.adapter_pair(
            x,
            first.down.weight,
            first.up.weight,
            second.down.weight,
            second.up.weight,
            first.scaling,
            first.non_linearity,
            single.dropout_p(first),
            backend=state.backend,
        )
    return self.down_proj(self.act_fn(self.gate_proj.forward(u)) * self.up_proj.forward(v))
