"""Patcher for fastpeft's own bottleneck adapters: the fused op replaces the eager module."""

import torch
import torch.nn as nn

from .. import functional
from ..adapters.modules import BottleneckAdapter
from ..registry import FLOAT_DTYPES
from . import base

# The fused forward reads down's and up's weights itself (zero3.py).
reads_child_parameters = True


def candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BottleneckAdapter)]


def ineligibility_reasons(module: nn.Module) -> list[str]:
    reasons = []
    dtypes = {module.down.weight.dtype, module.up.weight.dtype}
    if len(dtypes) != 1 or not dtypes <= set(FLOAT_DTYPES):
        reasons.append(f"adapter weight dtypes {sorted(map(str, dtypes))} not one fp32/fp16/bf16")
    if type(module.dropout) is not nn.Dropout:
        reasons.append(f"dropout is {type(module.dropout).__name__}, not nn.Dropout")
    return reasons


def dropout_p(module: nn.Module) -> float:
    return module.dropout.p if module.dropout.training else 0.0


def call_fallback_reason(module: nn.Module, z: torch.Tensor, residual) -> str | None:
    if z.dtype not in FLOAT_DTYPES:
        return "input dtype is not fp32/fp16/bf16"
    # Only z counts: fp32 adapter weights on a 16-bit stream are the fused op's own mixed case.
    autocast = base.autocast_reason(z)
    if autocast is not None:
        return autocast
    if module.up.weight.shape[0] != module.down.weight.shape[1]:
        return "parallel adapter with in_features != out_features (the fused op is square)"
    if residual is not None and residual.shape != z.shape:
        return "residual shape differs from the input's"
    reasons = ineligibility_reasons(module)
    return reasons[0] if reasons else None


def fused_forward(self: nn.Module, z: torch.Tensor, residual: torch.Tensor | None = None):
    """Replacement for BottleneckAdapter.forward (bound per instance)."""
    state = base.state_of(self)
    reason = call_fallback_reason(self, z, residual)
    if reason is not None:
        base.count(state, reason)
        return base.original_forward(self)(z, residual)
    base.count(state)
    with base.autocast_off(z):
        return functional.adapter(
            z,
            self.down.weight,
            self.up.weight,
            self.scaling,
            self.non_linearity,
            dropout_p(self),
            residual,
            backend=state.backend,
        )
