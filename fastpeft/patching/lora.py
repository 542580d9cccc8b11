"""Patcher for PEFT LoRA `Linear` layers: eligibility, and the fused forward that replaces PEFT's.

Static properties (layer type, base layer class, fan_in_fan_out, trainable base) are checked once
at patch time. Adapter state can change after patching (set_adapter, disable_adapter, merge, a
mixed-batch `adapter_names=` call, a hot-swap replacing the factors), so `call_fallback_reason`
re-checks it on every call and routes that call to PEFT's own forward.

Only what a fused op computes exactly is taken over: one active adapter whose variant has a
fused forward (`fused_calls`: vanilla LoRA, and variants whose forward is vanilla LoRA's), bias-free
plain nn.Linear factors of the expected shapes, a number or 0-d tensor scaling. Any variant or
layout PEFT adds later that this module does not know is skipped with its name as the reason at
patch time, never guessed at or crashed on. A fused DoRA would be one more entry in `fused_calls`.
Rank limits belong to the implementations (the dispatcher picks one that takes the rank).
"""

import torch
import torch.nn as nn

from .. import functional
from ..registry import FLOAT_DTYPES
from . import base, cpu_rule, lora_shared, zero3


def lora_layer_types() -> tuple[type, type]:
    """(peft LoraLayer, peft lora Linear); imported lazily so `import fastpeft` stays light."""
    from peft.tuners.lora.layer import Linear, LoraLayer

    return LoraLayer, Linear


# The fused forward reads base_layer's and lora_A/lora_B's weights itself (zero3.py).
reads_child_parameters = True


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


def fused_calls() -> dict:
    """LoRA variant type (None: plain LoRA) -> the fused call computing its forward."""
    calls = {None: _fused_lora}
    calls.update(dict.fromkeys(_vanilla_forward_variants(), _fused_lora))
    return calls


def _variant_type(module: nn.Module, name: str):
    variant = module.lora_variant.get(name)
    if variant is None and module.use_dora.get(name, False):
        return "DoRA"  # PEFT versions that flag DoRA without a variant object
    return None if variant is None else type(variant)


def _variant_reason(module: nn.Module, name: str) -> str | None:
    variant = _variant_type(module, name)
    if variant in fused_calls():
        return None
    label = variant if isinstance(variant, str) else variant.__name__
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
    if a.dtype != b.dtype or a.dtype not in FLOAT_DTYPES:
        reasons.append(f"adapter dtypes {a.dtype}/{b.dtype} are not one of fp32, fp16, bf16")
    # Full shapes: patched after deepspeed.initialize, ZeRO-3 weights are empty partitions here.
    a_shape, b_shape = zero3.shape_of(a), zero3.shape_of(b)
    N, K = zero3.shape_of(base.base_layer_of(module).weight)
    if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[1] != K or b_shape != (N, a_shape[0]):
        reasons.append(
            f"LoRA factor shapes A {tuple(a_shape)}, B {tuple(b_shape)} do not fit the base "
            f"weight [{N}, {K}] (expected A [R, {K}], B [{N}, R])"
        )
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
    reasons = base.peft_linear_reasons(module, lora_linear, "LoRA")
    if not isinstance(module, lora_linear) or type(module.get_base_layer()) is not nn.Linear:
        return reasons  # the adapter checks below read the base weight's shape
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
    backend = base.state_of(module).backend
    if cpu_rule.applies(x, backend) and _peft_is_faster(module, x, args, kwargs):
        return cpu_rule.REASON
    return None


def _peft_is_faster(module: nn.Module, x: torch.Tensor, args, kwargs) -> bool:
    name = module.active_adapters[0]
    dropout = module.lora_dropout[name]
    drops = isinstance(dropout, nn.Dropout) and dropout.training and dropout.p > 0
    weight, lora_a = base.base_layer_of(module).weight, module.lora_A[name].weight
    key = cpu_rule.kind("lora", x, weight, lora_a, drops)
    lora_b = module.lora_B[name].weight
    return cpu_rule.peft_is_faster(
        key,
        fused=lambda: _alone(module, x, "torch"),
        own=lambda: base.original_forward(module)(x, *args, **kwargs),
        train=torch.is_grad_enabled()
        and (lora_a.requires_grad or lora_b.requires_grad or x.requires_grad),
        trainable=lambda: [*module.parameters(), x],
    )


def _adapter(module: nn.Module) -> lora_shared.Adapter:
    """The active adapter's tensors and settings for this call (eval mode: no dropout)."""
    name = module.active_adapters[0]
    base_layer = base.base_layer_of(module)
    dropout = module.lora_dropout[name]
    dropout_p = dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0
    return lora_shared.Adapter(
        base_layer.weight, base_layer.bias, module.lora_A[name].weight,
        module.lora_B[name].weight, module.scaling[name], dropout_p,
    )  # fmt: skip


def _alone(self: nn.Module, x: torch.Tensor, backend: str) -> torch.Tensor:
    """The fused call computing this layer's own down-projection."""
    a = _adapter(self)
    return functional.lora_linear(
        x, a.weight, a.bias, a.lora_a, a.lora_b, a.scaling, a.dropout_p, backend=backend
    )


def _fused_lora(self: nn.Module, x: torch.Tensor, backend: str) -> torch.Tensor:
    group = base.state_of(self).shared if base.is_patched(self) else None
    if group is not None and lora_shared.usable(x):
        return group.forward(self, x, backend)
    return _alone(self, x, backend)


def _sibling_fallback_reason(module: nn.Module, x: torch.Tensor) -> str | None:
    return call_fallback_reason(module, x, (), {})


SHARED_CALLS = lora_shared.Calls(_adapter, _alone, _sibling_fallback_reason)


def link(model: nn.Module) -> list[list[str]]:
    """After patching: group the patched LoRA siblings on one input (q/k/v, gate/up) so that they
    share their down-projection launch (fastpeft/patching/lora_shared.py). Returns the groups'
    module names."""
    return lora_shared.link(model, "lora", SHARED_CALLS)


def _fused_call(self: nn.Module, x: torch.Tensor, backend: str) -> torch.Tensor:
    # The active adapter's variant picks the fused call (call_fallback_reason checked it has one).
    name = self.active_adapters[0]
    return fused_calls()[_variant_type(self, name)](self, x, backend)


# Replacement for peft.tuners.lora.layer.Linear.forward (bound per instance).
fused_forward = base.routed_forward(call_fallback_reason, _fused_call)
