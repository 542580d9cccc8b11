"""`fastpeft.patch(model)` and `fastpeft.unpatch(model)`: fused paths behind one call."""

import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .ops import _dispatch
from .patching import adapter as adapter_patching
from .patching import adapter_pair as adapter_pair_patching
from .patching import base, prefix_positions
from .patching import ia3 as ia3_patching
from .patching import lora as lora_patching

# Each patcher module provides KIND (a label for the report), candidates(model) -> [(name,
# module)], ineligibility_reasons(module) -> [str] and either fused_forward(module, *args,
# **kwargs) or, when the forward depends on the whole model, forward_for(model, module).
PATCHERS = (lora_patching, ia3_patching, prefix_positions)

# fastpeft's own adapters; the gate/up pair (an MLP-level fusion) is listed before single adapters.
ADAPTER_PATCHERS = (adapter_pair_patching, adapter_patching)

# What `patch` looks for, for the messages when it finds nothing.
LOOKED_FOR = (
    "PEFT LoRA and IA3 Linear layers (get_peft_model with a LoraConfig or IA3Config), fastpeft "
    "adapters (fastpeft.add_adapters) and PEFT prefix tuning on an M-RoPE model (Qwen2-VL family)"
)


@dataclass
class PatchReport:
    """What `patch` did: `.patched` module names, `.skipped` name → reasons, `.backend`."""

    patched: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    backend: str = "torch"
    kinds: dict[str, str] = field(default_factory=dict)  # module name -> "LoRA", "IA3", ...

    def __str__(self) -> str:
        counts = {}
        for name in self.patched:
            counts[self.kinds[name]] = counts.get(self.kinds[name], 0) + 1
        what = " + ".join(f"{n} {kind}" for kind, n in counts.items()) or "0 PEFT"
        line = f"fastpeft: patched {what} modules (backend: {self.backend})"
        line += f"; skipped {len(self.skipped)}"
        if self.skipped:
            reasons = sorted({r for rs in self.skipped.values() for r in rs})
            line += f" ({'; '.join(reasons)})"
        return line


def _model_device(model: nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def _report_backend(backend: str, device: torch.device) -> str:
    # The backend the model's current device resolves to; "auto" is re-resolved per call, so a
    # model patched on the CPU and moved to a GPU switches to Triton by itself.
    return _dispatch.resolve(backend, device)


def patch(model: nn.Module, backend: str = "auto", strict: bool = False) -> PatchReport:
    """Route every eligible layer of `model` through fastpeft's fused ops, in place.

    Covers PEFT LoRA and IA3 `Linear` layers and fastpeft's bottleneck adapters (a gate/up
    pre-adapter pair is fused into one op that reads x once). With PEFT prefix tuning on an M-RoPE
    model (Qwen2-VL family) it also supplies the position ids PEFT's prefix path lacks there.
    `model` is a `PeftModel` or any module containing such layers. `backend`: "auto" (Triton on
    CUDA, the PyTorch path elsewhere), "triton" (a CUDA GPU, or TRITON_INTERPRET=1 on a CPU) or
    "torch". Ineligible layers keep their own forward and
    are listed in the report with reasons; `strict=True` raises instead, listing every reason.
    Patching twice is harmless (the backend is updated); parameters, names and state_dict are
    untouched. Returns a `PatchReport`; when nothing was patched it also warns (UserWarning).
    """
    report = _patch(model, backend, strict, PATCHERS + ADAPTER_PATCHERS)
    if not report.patched:
        warnings.warn(_nothing_patched(report), UserWarning, stacklevel=2)
    return report


def _nothing_patched(report: PatchReport) -> str:
    # A silent no-op would look like "fastpeft is slow": say what was looked for, or why not.
    if not report.kinds:
        return (
            "fastpeft.patch patched nothing: the model has none of the layers it looks for: "
            f"{LOOKED_FOR}. Call patch() on the wrapped model, after get_peft_model or "
            "add_adapters."
        )
    reasons = sorted({r for rs in report.skipped.values() for r in rs})
    return (
        f"fastpeft.patch patched nothing: all {len(report.skipped)} layers it found keep their own "
        f"forward ({'; '.join(reasons)}). report.skipped lists them by name; strict=True raises."
    )


def patch_adapters(model: nn.Module, backend: str = "auto") -> PatchReport:
    """Patch only fastpeft's own adapters in `model` (what add_adapters(fused=True) does)."""
    return _patch(model, backend, False, ADAPTER_PATCHERS)


def _patch(model, backend, strict, patchers) -> PatchReport:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _dispatch.check_backend_name(backend)
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    report = PatchReport(backend=_report_backend(backend, _model_device(model)))
    plan = []
    for patcher in patchers:
        for name, module in patcher.candidates(model):
            report.kinds[name] = patcher.KIND
            reasons = patcher.ineligibility_reasons(module)
            if reasons:
                report.skipped[name] = reasons
            else:
                report.patched.append(name)
                plan.append((module, _forward_of(patcher, model, module)))
    if strict and (report.skipped or not report.kinds):
        details = [f"  {n}: {'; '.join(rs)}" for n, rs in report.skipped.items()]
        if not report.kinds:
            details = [
                f"  the model contains no layers fastpeft can patch (it looks for {LOOKED_FOR})"
            ]
        raise ValueError("fastpeft.patch(strict=True) cannot patch:\n" + "\n".join(details))
    for module, fused_forward in plan:
        base.install(module, fused_forward, backend)
    return report


def _forward_of(patcher, model: nn.Module, module: nn.Module):
    forward_for = getattr(patcher, "forward_for", None)
    return forward_for(model, module) if forward_for else patcher.fused_forward


def unpatch(model: nn.Module) -> int:
    """Restore the original forward of every module `patch` changed; returns how many."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(base.uninstall(module) for module in model.modules())


def is_patched(module: nn.Module) -> bool:
    """True when `module` itself currently runs a fastpeft forward."""
    return base.is_patched(module)
