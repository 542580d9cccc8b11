"""Patcher for PEFT LoRA `Linear` layers: eligibility, and the fused forward that replaces PEFT's.

Static properties (layer type, base layer class, fan_in_fan_out, trainable base) are checked once
at patch time. Adapter state can change after patching (set_adapter, disable_adapter, merge, a
mixed-batch `adapter_names=` call), so `call_fallback_reason` re-checks it on every call and routes
that call to PEFT's own forward.
"""

import torch
import torch.nn as nn

from .. import functional
from . import base

KIND = "LoRA"
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def lora_layer_types() -> tuple[type, type]:
    """(peft LoraLayer, peft lora Linear); imported lazily so `import fastpeft` stays light."""
    from peft.tuners.lora.layer import Linear, LoraLayer

    return LoraLayer, Linear


def candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every PEFT LoRA layer in `model` (eligible or not), with its name."""
    lora_layer, _ = lora_layer_types()
    return [(name, m) for name, m in model.named_modules() if isinstance(m, lora_layer)]


def _adapter_reasons(module: nn.Module) -> list[str]:
    """Reasons tied to the active adapter's configuration (also re-checked per call)."""
    reasons = []
    active = list(module.active_adapters)
    if len(active) != 1:
        return [f"{len(active)} active adapters ({', '.join(active)}); the fused path takes one"]
    name = active[0]
    if name not in module.lora_A:
        return [f"active adapter {name!r} has no LoRA weights in this layer"]
    if name in module.lora_variant or module.use_dora.get(name, False):
        variant = module.lora_variant.get(name)
        variant = type(variant).__name__ if variant is not None else "DoRA"
        reasons.append(f"LoRA variant {variant} (DoRA and other variants keep PEFT's forward)")
    if module.lora_B[name].bias is not None:
        reasons.append("lora_bias=True (lora_B has a bias)")
    dropout = module.lora_dropout[name]
    if not isinstance(dropout, (nn.Dropout, nn.Identity)):
        reasons.append(f"lora_dropout is {type(dropout).__name__}, not nn.Dropout or nn.Identity")
    a_dtype, b_dtype = module.lora_A[name].weight.dtype, module.lora_B[name].weight.dtype
    if a_dtype != b_dtype or a_dtype not in _FLOAT_DTYPES:
        reasons.append(f"adapter dtypes {a_dtype}/{b_dtype} are not one of fp32, fp16, bf16")
    if module.lora_A[name].weight.shape[0] > 256:
        rank = module.lora_A[name].weight.shape[0]
        reasons.append(f"rank {rank} > 256 (the kernels keep the rank in registers)")
    return reasons


def ineligibility_reasons(module: nn.Module) -> list[str]:
    """Every reason `module` (a PEFT LoRA layer) cannot take the fused path; [] if it can."""
    _, lora_linear = lora_layer_types()
    if not isinstance(module, lora_linear):
        return [f"LoRA layer type {type(module).__name__} is not supported (only Linear)"]
    reasons = []
    base_layer = module.get_base_layer()
    if type(base_layer) is not nn.Linear:
        reasons.append(
            f"base layer is {type(base_layer).__name__}, not torch.nn.Linear (quantised or custom)"
        )
    elif base_layer.weight.dtype not in _FLOAT_DTYPES:
        reasons.append(f"base weight dtype {base_layer.weight.dtype} is not fp32, fp16 or bf16")
    if getattr(module, "fan_in_fan_out", False):
        reasons.append("fan_in_fan_out=True (Conv1D-style weight)")
    if any(p.requires_grad for p in base_layer.parameters()):
        reasons.append("base layer weight or bias is trainable (the fused path needs it frozen)")
    return reasons + _adapter_reasons(module)


def call_fallback_reason(module: nn.Module, x: torch.Tensor, args, kwargs) -> str | None:
    """Why this call must use PEFT's forward, or None for the fused path."""
    if kwargs.get("adapter_names") is not None:
        return "mixed-batch adapter_names"
    reason = base.peft_call_fallback_reason(module, x, args, kwargs)
    if reason is not None:
        return reason
    reasons = _adapter_reasons(module)
    return reasons[0] if reasons else None


def fused_forward(self: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Replacement for peft.tuners.lora.layer.Linear.forward (bound per instance)."""
    state = base.state_of(self)
    reason = call_fallback_reason(self, x, args, kwargs)
    if reason is not None:
        base.count(state, reason)
        return base.original_forward(self)(x, *args, **kwargs)
    base.count(state)
    name = self.active_adapters[0]
    base_layer = self.get_base_layer()
    dropout = self.lora_dropout[name]
    dropout_p = dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0
    return functional.lora_linear(
        x,
        base_layer.weight,
        base_layer.bias,
        self.lora_A[name].weight,
        self.lora_B[name].weight,
        self.scaling[name],
        dropout_p,
        backend=state.backend,
    )
