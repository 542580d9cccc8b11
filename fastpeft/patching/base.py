"""Per-instance forward replacement, and the eligibility and routing shared by the patchers.

A patched module gets a `forward` bound on the instance (the class is never touched), and a
`PatchState` that remembers what to restore and which method installed it. Modules wrapped by
accelerate hooks keep their hook: the hook's `_old_forward` is what gets replaced.
"""

import contextlib
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..registry import FLOAT_DTYPES
from . import cpu_rule
from .quantised import quantised_reason

STATE_ATTR = "_fastpeft_state"


@dataclass
class PatchState:
    """What a patched module needs: its backend request, the forward to restore, the method that
    installed it (a registry name), call counts."""

    backend: str
    method: str
    forward_attr: str
    previous_instance_forward: Callable | None
    fallbacks: Counter = field(default_factory=Counter)  # eager calls only (see `count`)
    fused_calls: int = 0  # eager calls only (see `count`)
    # The group of sibling layers on one input this module shares its down-projection with
    # (shared-input LoRA: fastpeft/patching/lora_shared.py), if any.
    shared: object | None = None
    # cpu_rule.route_key of the last call the CPU rule sent to PEFT's forward (None otherwise):
    # a call that matches it goes there again without the per-call checks.
    peft_route: tuple | None = None


def _forward_attr(module: nn.Module) -> str:
    # accelerate's add_hook_to_module moves the real forward to `_old_forward` and installs a
    # wrapper as `forward`; replacing `_old_forward` keeps its device-placement hook working.
    if hasattr(module, "_hf_hook") and "_old_forward" in module.__dict__:
        return "_old_forward"
    return "forward"


def is_patched(module: nn.Module) -> bool:
    return isinstance(module.__dict__.get(STATE_ATTR), PatchState)


def state_of(module: nn.Module) -> PatchState:
    return module.__dict__[STATE_ATTR]


def original_forward(module: nn.Module) -> Callable:
    """The forward that was in place before patching (bound to the module)."""
    state = state_of(module)
    if state.previous_instance_forward is not None:
        return state.previous_instance_forward
    return types.MethodType(type(module).forward, module)


def install(module: nn.Module, fused_forward: Callable, backend: str, method: str) -> None:
    """Bind `fused_forward(module, *args, **kwargs)` as the module's forward for `method`;
    idempotent (patching again updates the backend)."""
    if is_patched(module):
        state_of(module).backend = backend
        return
    attr = _forward_attr(module)
    previous = module.__dict__.get(attr)
    module.__dict__[STATE_ATTR] = PatchState(backend, method, attr, previous)
    setattr(module, attr, types.MethodType(fused_forward, module))


def uninstall(module: nn.Module) -> bool:
    """Restore the module's original forward; False if it was not patched."""
    if not is_patched(module):
        return False
    state = module.__dict__.pop(STATE_ATTR)
    if state.previous_instance_forward is None:
        module.__dict__.pop(state.forward_attr, None)
    else:
        setattr(module, state.forward_attr, state.previous_instance_forward)
    return True


def count(state: PatchState, fallback_reason: str | None = None) -> None:
    """Count a fused call (or a fallback, with its reason), in eager mode only: traced by
    torch.compile, the counters would become guarded constants and every call would recompile.
    Under compile, `fastpeft.ops._counters` (recorded inside the custom ops) shows the path."""
    if torch.compiler.is_compiling():
        return
    if fallback_reason is None:
        state.fused_calls += 1
    else:
        state.fallbacks[fallback_reason] += 1


def _is_plain_tensor(t: torch.Tensor) -> bool:
    if type(t) in (torch.Tensor, nn.Parameter):
        return True
    # FSDP2 shards parameters as DTensors and hands the forward plain unsharded ones.
    if torch.distributed.is_available():
        from torch.distributed.tensor import DTensor

        return isinstance(t, DTensor)
    return False


def base_linear_reasons(base_layer: nn.Module) -> list[str]:
    """Why a PEFT tuner layer's base layer is not the frozen plain GEMM the fused ops compute."""
    if type(base_layer) is not nn.Linear:
        return [
            f"base layer is {type(base_layer).__name__}, not torch.nn.Linear (quantised or custom)"
        ]
    reasons = []
    weight = base_layer.weight
    if weight.dtype not in FLOAT_DTYPES:
        reasons.append(f"base weight dtype {weight.dtype} is not fp32, fp16 or bf16")
    elif not _is_plain_tensor(weight):
        reasons.append(
            f"base weight is a {type(weight).__name__} tensor subclass (quantised?), "
            "not a plain tensor"
        )
    if any(p.requires_grad for p in base_layer.parameters()):
        reasons.append("base layer weight or bias is trainable (the fused path needs it frozen)")
    return reasons


def base_layer_of(module: nn.Module) -> nn.Module:
    """PEFT's `get_base_layer()` (the innermost `base_layer` of nested tuner wrappers), read from
    the modules' `_modules` dicts: PEFT's own walk goes through nn.Module.__getattr__ twice per
    level, a few µs that every patched call paid several times over (on a CPU, as much as a small
    layer's whole forward)."""
    layer = module
    while (inner := layer._modules.get("base_layer")) is not None:
        layer = inner
    return layer


def autocast_reason(x: torch.Tensor, *weights: torch.Tensor) -> str | None:
    """Why a call under autocast needs the module's own forward, or None.

    Autocast is how the HF Trainer and TRL run bf16/fp16 mixed precision (TRL by default). It
    only changes what a patched layer computes where it would cast: an input or weight in another
    dtype than autocast's. With both in autocast's dtype (a model loaded in bf16, the usual way to
    fine-tune with LoRA), the base product is what it is without autocast, and the fused call runs
    as it would there (:func:`autocast_off`); PEFT's adapter branch, cast to bf16 by autocast, is
    matched within the bf16 budget by the fused kernels' fp32-adapter math. Calls with an fp32
    input or weight under bf16 autocast (plain AMP over an fp32 model) keep PEFT's forward."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return None
    dtype = torch.get_autocast_dtype(device)
    others = sorted({str(t.dtype) for t in (x, *weights) if t.dtype != dtype})
    if not others:
        return None
    return (
        f"autocast to {dtype} with a {'/'.join(others)} input or weight (fused under autocast "
        "when both are in its dtype: load the model in it)"
    )


def autocast_off(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast switched off for a fused call on `x` (its tensors are already in autocast's
    dtype, see `autocast_reason`): the kernels' internal casts stay their own."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


def peft_call_fallback_reason(module: nn.Module, x: torch.Tensor, args, kwargs) -> str | None:
    """Per-call states of a PEFT tuner layer (LoRA, IA3) that need PEFT's own forward."""
    if module.disable_adapters:
        return "adapters disabled"
    if module.merged:
        return "adapters merged"
    if args or kwargs:
        return "extra forward arguments"
    base_layer = base_layer_of(module)
    autocast = autocast_reason(x, base_layer.weight)
    if autocast is not None:
        return autocast
    if x.dtype != base_layer.weight.dtype:
        return "input dtype differs from the base weight dtype"
    if base_layer.weight.requires_grad or (
        base_layer.bias is not None and base_layer.bias.requires_grad
    ):
        return "base layer trainable"
    return None


def peft_linear_reasons(module: nn.Module, linear_class: type, label: str) -> list[str]:
    """Why a PEFT tuner layer (LoRA, IA3) is not a plain `linear_class` over a frozen plain
    nn.Linear, which is what the fused linears compute; [] if it is."""
    quantised = quantised_reason(module, base_layer_of(module))
    if quantised is not None:
        return [quantised]
    if not isinstance(module, linear_class):
        return [f"{label} layer type {type(module).__name__} is not supported (only Linear)"]
    if type(module) is not linear_class:
        # e.g. TorchaoLoraLinear: a quantised weight behind PEFT's own Linear forward.
        return [
            f"{label} layer type {type(module).__name__} subclasses peft's "
            f"{label.lower()}.Linear (quantised or custom); only {label.lower()}.Linear itself "
            "is supported"
        ]
    reasons = base_linear_reasons(module.get_base_layer())
    if getattr(module, "fan_in_fan_out", False):
        reasons.append("fan_in_fan_out=True (Conv1D-style weight)")
    return reasons


def routed_forward(call_fallback_reason: Callable, fused_call: Callable) -> Callable:
    """A patched forward: the module's own forward for calls `call_fallback_reason(module, x, args,
    kwargs)` gives a reason for (counted under it), else `fused_call(module, x, backend)`."""

    def forward(self: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        state = state_of(self)
        if state.peft_route is not None and not torch.compiler.is_compiling():
            if state.peft_route == cpu_rule.route_key(self, x, state.backend):
                count(state, cpu_rule.REASON)
                return original_forward(self)(x, *args, **kwargs)
        reason = call_fallback_reason(self, x, args, kwargs)
        state.peft_route = None
        if reason == cpu_rule.REASON:
            state.peft_route = cpu_rule.route_key(self, x, state.backend)
        if reason is not None:
            count(state, reason)
            return original_forward(self)(x, *args, **kwargs)
        count(state)
        with autocast_off(x):
            return fused_call(self, x, state.backend)

    return forward
