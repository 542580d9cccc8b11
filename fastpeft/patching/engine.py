"""The patching engine: find the modules the registry's patchers take, claim, install, report.

Patchers (one module per method, named in fastpeft/registry.py) provide `candidates(model) ->
[(name, module)]`, `ineligibility_reasons(module) -> [str]` and either `fused_forward(module,
*args, **kwargs)` or, when the forward depends on the whole model, `forward_for(model, module)`.
A patcher whose fused module replaces others (the gate/up adapter pair, which runs its two member
adapters itself) also provides `members(module) -> [member]`. A patcher whose patched modules
cooperate (LoRA siblings on one input sharing their down-projection) provides `link(model) ->
[[module name]]`, run after every module is installed, returning the groups it formed.

The first patcher that claims a module owns it: later patchers skip it. Members are claimed with
their owner and keep their own forward (the owner's fused forward never calls them; a call it
hands back to the module's own forward runs them eagerly), so they are neither reported nor
installed on their own.

A patcher whose fused forward reads its children's parameters without calling the children (LoRA,
IA3, the adapters) sets `reads_child_parameters = True`, so that DeepSpeed ZeRO-3 is told to
gather them around the patched module's forward (fastpeft/patching/zero3.py).
"""

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .. import dispatch, registry
from . import base, zero3


@dataclass
class PatchReport:
    """What `patch` did: `.patched` module names, `.skipped` name → reasons, `.backend`."""

    patched: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    backend: str = "torch"
    kinds: dict[str, str] = field(default_factory=dict)  # module name -> "LoRA", "IA3", ...
    # Patched modules grouped to share work (LoRA siblings on one input: one down-projection).
    shared: list[list[str]] = field(default_factory=list)

    def usage(self, model: nn.Module) -> dict[str, dict]:
        """Per patched module of `model`: eager calls on the fused path ("fused"), those of them
        whose down-projection came from a launch shared with its siblings ("shared", for LoRA
        layers in a shared-input group), and those that ran the module's own forward, by reason
        ("fallbacks": e.g. the CPU rule's, where PEFT's own forward is the faster)."""
        modules = dict(model.named_modules())
        out = {}
        for name in self.patched:
            module = modules.get(name)
            if module is not None and base.is_patched(module):
                state = base.state_of(module)
                out[name] = {"fused": state.fused_calls, "fallbacks": dict(state.fallbacks)}
                if state.shared is not None:
                    out[name]["shared"] = state.shared.shared_calls[state.shared.index(module)]
        return out

    @staticmethod
    def choices() -> list[dict]:
        """The per-shape choices "auto" timed so far (on a GPU, LoRA's fused "triton" against
        "hybrid"): method, shape bucket, the backend kept and every contender's seconds. They
        are made on first use, so this fills as the model runs."""
        return [
            {"method": key[0], "device": key[1], "dtype": str(key[2]), "sizes": dict(key[3]),
             "variant": [str(v) for v in key[4]], "shape": list(key[5]),
             "chosen": min(seconds, key=seconds.get), "seconds": seconds}
            for key, seconds in dispatch.races().items()
        ]  # fmt: skip

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


def model_device(model: nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def _report_backend(backend: str, device: torch.device, methods) -> str:
    # What the model's current device resolves to per method ("auto" is re-resolved per call, so
    # a model patched on the CPU and moved to a GPU switches to Triton by itself). Resolving here
    # also rejects, at patch time, a backend a found method cannot run.
    with_kernels = [m for m in methods if m.implementations] or [registry.get("lora")]
    chosen = {m.label: dispatch.resolve(m.name, backend, device) for m in with_kernels}
    if len(set(chosen.values())) == 1:
        return next(iter(chosen.values()))
    return ", ".join(f"{label}: {b}" for label, b in chosen.items())


def run(model: nn.Module, methods, backend: str, strict: bool) -> PatchReport:
    """Patch every eligible module of `methods` (registry entries, in claim order) in `model`.
    With `strict`, raise listing every reason instead of patching anything when one is skipped
    (or nothing is found)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    dispatch.check_backend_name(backend)
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    report = PatchReport()
    plan, claimed, found = [], set(), []
    for method in methods:
        patcher = registry.load(method.patcher)
        for name, module in patcher.candidates(model):
            if id(module) in claimed:
                continue
            report.kinds[name] = method.label
            if method not in found:
                found.append(method)
            reasons = patcher.ineligibility_reasons(module)
            if reasons:
                report.skipped[name] = reasons
                continue
            members = patcher.members(module) if hasattr(patcher, "members") else []
            claimed.update(id(m) for m in (module, *members))
            report.patched.append(name)
            plan.append((module, _forward_of(patcher, model, module), method.name))
    report.backend = _report_backend(backend, model_device(model), found)
    if strict and (report.skipped or not report.kinds):
        details = [f"  {n}: {'; '.join(rs)}" for n, rs in report.skipped.items()]
        if not report.kinds:
            details = [f"  the model contains no layers fastpeft can patch (it looks for {what()})"]
        raise ValueError("fastpeft.patch(strict=True) cannot patch:\n" + "\n".join(details))
    # Before installing: a DeepSpeed without the API raises here, leaving the model unpatched.
    zero3.register_child_parameters(
        [m for m, _, name in plan if getattr(_patcher(name), "reads_child_parameters", False)]
    )
    for module, fused_forward, method_name in plan:
        base.install(module, fused_forward, backend, method_name)
    for method in found:
        link = getattr(registry.load(method.patcher), "link", None)
        if link is not None:
            report.shared += link(model)
    return report


def _patcher(method_name: str):
    return registry.load(registry.get(method_name).patcher)


def _forward_of(patcher, model: nn.Module, module: nn.Module):
    forward_for = getattr(patcher, "forward_for", None)
    return forward_for(model, module) if forward_for else patcher.fused_forward


def what() -> str:
    """What `patch` looks for, for the messages when it finds nothing."""
    return (
        "PEFT LoRA and IA3 Linear layers (get_peft_model with a LoraConfig or IA3Config), fastpeft "
        "adapters (fastpeft.add_adapters) and PEFT prefix tuning on an M-RoPE model (Qwen2-VL "
        "family)"
    )


def unpatch(model: nn.Module, methods: tuple[str, ...] | None = None) -> int:
    """Restore the original forward of every module patched for `methods` (None: all)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(
        base.uninstall(module)
        for module in model.modules()
        if base.is_patched(module) and (methods is None or base.state_of(module).method in methods)
    )
