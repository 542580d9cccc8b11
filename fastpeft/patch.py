"""`fastpeft.patch(model)` and `fastpeft.unpatch(model)`: fused paths behind one call.

This module composes: the registry says which methods have patchers and in which order, the
engine (fastpeft/patching/engine.py) claims, installs and reports.
"""

import warnings

import torch.nn as nn

from . import registry
from .patching import base, engine
from .patching.engine import PatchReport

__all__ = ["PatchReport", "is_patched", "patch", "patch_adapters", "unpatch"]


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
    report = engine.run(model, registry.patchable(), backend, strict)
    if not report.patched:
        warnings.warn(_nothing_patched(report), UserWarning, stacklevel=2)
    return report


def _nothing_patched(report: PatchReport) -> str:
    # A silent no-op would look like "fastpeft is slow": say what was looked for, or why not.
    if not report.kinds:
        return (
            "fastpeft.patch patched nothing: the model has none of the layers it looks for: "
            f"{engine.what()}. Call patch() on the wrapped model, after get_peft_model or "
            "add_adapters."
        )
    reasons = sorted({r for rs in report.skipped.values() for r in rs})
    return (
        f"fastpeft.patch patched nothing: all {len(report.skipped)} layers it found keep their own "
        f"forward ({'; '.join(reasons)}). report.skipped lists them by name; strict=True raises."
    )


def patch_adapters(model: nn.Module, backend: str = "auto") -> PatchReport:
    """Patch only fastpeft's own adapters in `model` (what add_adapters(fused=True) does)."""
    return engine.run(model, [registry.get(m) for m in registry.ADAPTER_METHODS], backend, False)


def unpatch(model: nn.Module) -> int:
    """Restore the original forward of every module `patch` changed; returns how many."""
    return engine.unpatch(model)


def is_patched(module: nn.Module) -> bool:
    """True when `module` itself currently runs a fastpeft forward."""
    return base.is_patched(module)
