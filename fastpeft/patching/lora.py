"""Patcher for PEFT LoRA `Linear` layers: eligibility, and the fused forward that replaces PEFT's.

Static properties (layer type, base layer class, fan_in_fan_out, trainable base) are checked once
at patch time. Adapter state can change after patching (set_adapter, disable_adapter, merge, a
mixed-batch `adapter_names=` call, a hot-swap replacing the factors), so `call_fallback_reason`
re-checks it on every call and routes that call to PEFT's own forward.

Only what the fused op computes exactly is taken over: one active adapter whose forward is vanilla
LoRA's (no variant, or one on the short list below), bias-free plain nn.Linear factors of the
expected shapes, a number or 0-d tensor scaling. Any layout PEFT adds later that this module does
not know is skipped with a reason at patch time, never guessed at or crashed on.
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


def _vanilla_forward_variants() -> tuple[type, ...]:
    """PEFT LoRA variants whose Linear forward is exactly vanilla LoRA's (they differ in init or
    in which factor trains), so the fused path computes what PEFT computes. Looked up by name:
    a PEFT version without one simply has nothing to allow."""
    from peft.tuners.lora import variants

    # MiCA: SVD init of B (then frozen) and A = 0; its forward is `lora_B(lora_A(drop(x))) * s`.
    names = ("MiCALinearVariant",)
    return tuple(c for c in (getattr(variants, n, None) for n in names) if isinstance(c, type))


def _variant_reason(module: nn.Module, name: str) -> str | None:
    variant = module.lora_variant.get(name)
    if variant is None and not module.use_dora.get(name, False):
        return None
    if variant is not None and type(variant) in _vanilla_forward_variants():
        return None
    label = type(variant).__name__ if variant is not None else "DoRA"
    return f"LoRA variant {label} (DoRA and other variants keep PEFT's forward)"


def _factor_reasons(module: nn.Module, name: str) -> list[str]:
    """lora_A / lora_B must be what the fused op models: bias-free plain nn.Linear factors of
    shapes [R, K] and [N, R] (anything else, e.g. BD-LoRA's block-diagonal factors, is left to
    PEFT rather than guessed at)."""
    lora_a, lora_b = module.lora_A[name], module.lora_B[name]
    reasons = [
        f"{label} is {type(factor).__name__}, not a plain torch.nn.Linear (a LoRA variant's layout)"
        for label, factor in (("lora_A", lora_a), ("lora_B", lora_b))
        if type(factor) is not nn.Linear
    ]
    if reasons:
        return reasons
    if lora_a.bias is not None:
        reasons.append("lora_A has a bias")
    if lora_b.bias is not None:
        reasons.append("lora_bias=True (lora_B has a bias)")
    a, b = lora_a.weight, lora_b.weight
    if a.dtype != b.dtype or a.dtype not in _FLOAT_DTYPES:
        reasons.append(f"adapter dtypes {a.dtype}/{b.dtype} are not one of fp32, fp16, bf16")
    N, K = module.get_base_layer().weight.shape
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != K or tuple(b.shape) != (N, a.shape[0]):
        reasons.append(
            f"LoRA factor shapes A {tuple(a.shape)}, B {tuple(b.shape)} do not fit the base "
            f"weight [{N}, {K}] (expected A [R, {K}], B [{N}, R])"
        )
    elif a.shape[0] > 256:
        reasons.append(f"rank {a.shape[0]} > 256 (the kernels keep the rank in registers)")
    return reasons


def _scaling_reason(scaling) -> str | None:
    # A number, or a 0-d float tensor (PEFT's prepare_model_for_compiled_hotswap stores those).
    # Only the type is checked here: reading a GPU tensor's value would synchronise every call.
    if isinstance(scaling, (int, float)):
        return None
    if isinstance(scaling, torch.Tensor) and scaling.dim() == 0 and scaling.is_floating_point():
        return None
    what = f"a tensor of shape {tuple(scaling.shape)}" if torch.is_tensor(scaling) else None
    return f"scaling is {what or type(scaling).__name__}, not a number or a 0-d float tensor"


def _adapter_reasons(module: nn.Module) -> list[str]:
    """Reasons tied to the active adapter's configuration (also re-checked per call)."""
    active = list(module.active_adapters)
    if len(active) != 1:
        return [f"{len(active)} active adapters ({', '.join(active)}); the fused path takes one"]
    name = active[0]
    if name not in module.lora_A or name not in module.lora_B:
        return [f"active adapter {name!r} has no LoRA weights in this layer"]
    variant = _variant_reason(module, name)
    reasons = [variant] if variant else []
    reasons += _factor_reasons(module, name)
    scaling = _scaling_reason(module.scaling.get(name))
    if scaling:
        reasons.append(scaling)
    dropout = module.lora_dropout[name]
    if not isinstance(dropout, (nn.Dropout, nn.Identity)):
        reasons.append(f"lora_dropout is {type(dropout).__name__}, not nn.Dropout or nn.Identity")
    return reasons


def ineligibility_reasons(module: nn.Module) -> list[str]:
    """Every reason `module` (a PEFT LoRA layer) cannot take the fused path; [] if it can."""
    _, lora_linear = lora_layer_types()
    if not isinstance(module, lora_linear):
        return [f"LoRA layer type {type(module).__name__} is not supported (only Linear)"]
    if type(module) is not lora_linear:
        # e.g. TorchaoLoraLinear: a quantised weight behind PEFT's own Linear forward.
        return [
            f"LoRA layer type {type(module).__name__} subclasses peft's lora.Linear "
            "(quantised or custom); only lora.Linear itself is supported"
        ]
    base_layer = module.get_base_layer()
    reasons = base.base_linear_reasons(base_layer)
    if getattr(module, "fan_in_fan_out", False):
        reasons.append("fan_in_fan_out=True (Conv1D-style weight)")
    if type(base_layer) is not nn.Linear:  # the adapter checks below read the base weight's shape
        return reasons
    return reasons + _adapter_reasons(module)


def call_fallback_reason(module: nn.Module, x: torch.Tensor, args, kwargs) -> str | None:
    """Why this call must use PEFT's forward, or None for the fused path."""
    if kwargs.get("adapter_names") is not None:
        return "mixed-batch adapter_names"
    reason = base.peft_call_fallback_reason(module, x, args, kwargs)
    if reason is not None:
        return reason
    reasons = _adapter_reasons(module)
    if reasons:
        return reasons[0]
    adapter_dtype = module.lora_A[module.active_adapters[0]].weight.dtype
    if not getattr(module, "cast_input_dtype_enabled", True) and x.dtype != adapter_dtype:
        # PEFT then feeds x uncast to lora_A and raises; the fused path would cast silently.
        return "cast_input_dtype_enabled=False with an input dtype other than the adapter's"
    return None


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
