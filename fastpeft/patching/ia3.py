"""Patcher for PEFT IA3 `Linear` layers: eligibility, and the fused forward that replaces PEFT's.

Static properties (layer type, base layer class, fan_in_fan_out, trainable base) are checked once
at patch time. Adapter state can change after patching (set_adapter, disable_adapter, merge), so
`call_fallback_reason` re-checks it on every call and routes that call to PEFT's own forward.
"""

import torch
import torch.nn as nn

from .. import functional
from . import base, cpu_rule, zero3


def ia3_layer_types() -> tuple[type, type]:
    """(peft IA3Layer, peft ia3 Linear); imported lazily so `import fastpeft` stays light."""
    from peft.tuners.ia3.layer import IA3Layer, Linear

    return IA3Layer, Linear


# The fused forward reads base_layer's weight and ia3_l's vectors itself (zero3.py).
reads_child_parameters = True


def candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every PEFT IA3 layer in `model` (eligible or not), with its name."""
    ia3_layer, _ = ia3_layer_types()
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ia3_layer)]


def _adapter_reasons(module: nn.Module) -> list[str]:
    """Reasons tied to the active adapter's configuration (also re-checked per call)."""
    active = list(module.active_adapters)
    if len(active) != 1:
        # PEFT multiplies the vectors of all active adapters; the fused path takes one vector.
        return [f"{len(active)} active adapters ({', '.join(active)}); the fused path takes one"]
    name = active[0]
    if name not in module.ia3_l:
        return [f"active adapter {name!r} has no IA3 vector in this layer"]
    vector = module.ia3_l[name]
    base_dtype = base.base_layer_of(module).weight.dtype
    if vector.dtype not in (torch.float32, base_dtype):
        # Elsewhere PEFT's casts differ (a bf16 vector on an fp16 base rounds x to bf16 first).
        return [f"IA3 vector dtype {vector.dtype} is neither fp32 nor the base dtype {base_dtype}"]
    features = module.in_features if module.is_feedforward else module.out_features
    numel = zero3.numel_of(vector)  # full size: a ZeRO-3 vector is an empty partition here
    if numel != features:
        return [f"IA3 vector has {numel} elements, expected {features}"]
    return []


def ineligibility_reasons(module: nn.Module) -> list[str]:
    """Every reason `module` (a PEFT IA3 layer) cannot take the fused path; [] if it can."""
    _, ia3_linear = ia3_layer_types()
    reasons = base.peft_linear_reasons(module, ia3_linear, "IA3")
    if reasons:  # the adapter checks below assume a plain linear base
        return reasons
    return _adapter_reasons(module)


def call_fallback_reason(module: nn.Module, x: torch.Tensor, args, kwargs) -> str | None:
    """Why this call must use PEFT's forward, or None for the fused path (on the CPU, PEFT's
    forward where the CPU rule timed it faster: fastpeft/patching/cpu_rule.py)."""
    reason = base.peft_call_fallback_reason(module, x, args, kwargs)
    if reason is not None:
        return reason
    reasons = _adapter_reasons(module)
    if reasons:
        return reasons[0]
    if cpu_rule.applies(x, base.state_of(module).backend) and _peft_is_faster(
        module, x, args, kwargs
    ):
        return cpu_rule.REASON
    return None


def _peft_is_faster(module: nn.Module, x: torch.Tensor, args, kwargs) -> bool:
    vector = module.ia3_l[module.active_adapters[0]]
    key = cpu_rule.kind("ia3", x, base.base_layer_of(module).weight, vector, module.is_feedforward)
    return cpu_rule.peft_is_faster(
        key,
        fused=lambda: _fused_call(module, x, "torch"),
        own=lambda: base.original_forward(module)(x, *args, **kwargs),
        train=torch.is_grad_enabled() and (vector.requires_grad or x.requires_grad),
        trainable=lambda: [*module.parameters(), x],
    )


def _fused_call(self: nn.Module, x: torch.Tensor, backend: str) -> torch.Tensor:
    base_layer = base.base_layer_of(self)
    return functional.ia3_linear(
        x,
        base_layer.weight,
        base_layer.bias,
        self.ia3_l[self.active_adapters[0]].flatten(),  # PEFT's [N, 1] / [1, K] as 1-D
        self.is_feedforward,
        backend=backend,
    )


# Replacement for peft.tuners.ia3.layer.Linear.forward (bound per instance).
fused_forward = base.routed_forward(call_fallback_reason, _fused_call)
