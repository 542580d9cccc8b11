"""Part 3 of the proof suite: the headline layers at M=8192, most important first, until the
budget runs out, with per-kernel times from torch.profiler for the fastpeft rows (so a missed
target names the kernel that missed it).

Cases vary what the layers suite fixes: the dtype of the LoRA / adapter weights (fp32, PEFT's
default, or bf16) and LoRA dropout (0 or Paper A's 0.05). Providers: "base" (the frozen linear:
the floor), "peft" (fp32 adapters), "peft-bf16", "fastpeft" (the PEFT model with the case's
adapter dtype, patched); adapters: "eager" and "fastpeft". No torch.compile providers: their
compilation cost most of the layers suite's time on the first GPU run (NOTES.md).
"""

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..adapters import AdapterConfig
from ..adapters.modules import BottleneckAdapter
from ..patch import patch
from . import layers
from .layers import LayerCase
from .proof_budget import Deadline, Setting
from .stats import spread
from .timing import time_interleaved

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_SHORT = {"float32": "fp32", "bfloat16": "bf16"}
HEADLINE_DROPOUT = 0.05  # Paper A's LoRA dropout


@dataclass(frozen=True)
class ProofCase:
    layer: LayerCase
    weights: str = "float32"  # dtype of the trained weights (LoRA A/B, adapter); IA3: fp32
    dropout: float = 0.0

    def name(self) -> str:
        if self.layer.kind == "ia3":
            return self.layer.name()
        extra = f", dropout {self.dropout:g}" if self.layer.kind == "lora" else ""
        return f"{self.layer.name()} {_SHORT[self.weights]} weights{extra}"


def proof_cases(M: int, scale: int = 1) -> list[ProofCase]:
    """Every case, most important first: LoRA r16 4096² (the headline target), LoRA r128, IA3
    (output and input scale), the Paper A adapter (H=256), then the other two shapes."""
    d, ff = 4096 // scale, 11008 // scale
    square, up, down = ("q/o", d, d), ("gate/up", d, ff), ("down", ff, d)
    variants = [(w, p) for p in (HEADLINE_DROPOUT, 0.0) for w in ("float32", "bfloat16")]

    def lora(shape, r):
        return [
            ProofCase(LayerCase("lora", *shape[:1], M, *shape[1:], r), w, p) for w, p in variants
        ]

    cases = lora(square, 16) + lora(square, 128 // min(scale, 8))
    cases.append(ProofCase(LayerCase("ia3", "q/o", M, d, d)))
    cases.append(ProofCase(LayerCase("ia3", "down", M, ff, d, feedforward=True)))
    H = 256 // min(scale, 8)
    cases += [ProofCase(LayerCase("adapter", "post", M, d, d, H), w) for w in _DTYPES]
    for shape in (up, down):
        cases += lora(shape, 16) + lora(shape, 128 // min(scale, 8))
    cases.append(ProofCase(LayerCase("ia3", "gate/up", M, d, ff)))
    return cases


def _peft(case: ProofCase, dtype, device, weights: str) -> nn.Module:
    from peft import IA3Config, LoraConfig, get_peft_model

    layer = case.layer
    torch.manual_seed(0)
    base = layers._OneLinear(layer.K, layer.N).to(device=device, dtype=dtype).requires_grad_(False)
    if layer.kind == "lora":
        config = LoraConfig(
            r=layer.r,
            lora_alpha=2 * layer.r,
            lora_dropout=case.dropout,
            target_modules=["proj"],
            init_lora_weights=False,
        )
    else:
        config = IA3Config(
            target_modules=["proj"], feedforward_modules=["proj"] if layer.feedforward else []
        )
    # autocast_adapter_dtype=True is PEFT's default: fp32 adapters on a 16-bit base.
    model = get_peft_model(base, config, autocast_adapter_dtype=weights == "float32")
    with torch.no_grad():  # IA3 starts at ones (the identity): make it do something
        for name, param in model.named_parameters():
            if ".ia3_l." in name:
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
    return model


def build_providers(case: ProofCase, dtype, device) -> dict[str, nn.Module]:
    layer = case.layer
    if layer.kind == "adapter":
        torch.manual_seed(0)
        config = AdapterConfig(bottleneck_size=layer.r, dropout=0.05)
        adapter = BottleneckAdapter(layer.K, config, _DTYPES[case.weights], device=device)
        providers = {"eager": layers._OneAdapter(adapter)}
        providers["fastpeft"] = copy.deepcopy(providers["eager"])
    else:
        peft = _peft(case, dtype, device, "float32")
        base = copy.deepcopy(peft.get_base_model())
        base.proj = base.proj.base_layer
        providers = {"base": base, "peft": peft}
        if dtype != torch.float32:
            providers["peft-bf16"] = _peft(case, dtype, device, "bfloat16")
        mine = peft if case.weights == "float32" else providers.get("peft-bf16", peft)
        providers["fastpeft"] = copy.deepcopy(mine)
    report = patch(providers["fastpeft"])
    if len(report.patched) != 1:
        raise RuntimeError(f"fastpeft did not patch the benchmark layer: {report}")
    return providers


def kernel_times(fn, device: torch.device, calls: int = 3, top: int = 6) -> list[dict]:
    """The `top` most expensive kernels (GPU) or ops (CPU) of one call of `fn`, from
    torch.profiler: name, milliseconds per call and share of the call's total."""
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm: the profiler should not see first-call set-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    cuda = device.type == "cuda"
    events = []
    for event in prof.key_averages():
        us = event.self_device_time_total if cuda else event.self_cpu_time_total
        if us > 0 and not event.key.startswith("ProfilerStep"):
            events.append((us, event.key))
    total = sum(us for us, _ in events) or 1.0
    events.sort(reverse=True)
    return [
        {"kernel": name[:120], "ms": round(us / calls / 1e3, 4), "share": round(us / total, 3)}
        for us, name in events[:top]
    ]


def bench_case(case: ProofCase, dtype, device, reps: int) -> list[dict]:
    providers = build_providers(case, dtype, device)
    baseline = layers.baseline_of(case.layer.kind)
    layer = case.layer
    xs = [torch.randn(layer.M, layer.K, device=device, dtype=dtype) for _ in range(2)]
    errors = layers._check(providers, baseline, xs[0], dtype)
    dy = torch.randn(layer.M, layer.N, device=device, dtype=dtype)
    timed = {name: module for name, module in providers.items() if name not in errors}
    rows = []
    for mode in layers.MODES:
        calls = {name: layers._call(module, mode, xs, dy) for name, module in timed.items()}
        samples = time_interleaved(calls, device, reps)
        for name in providers:
            row = {"suite": "layers", "case": case.name(), "kind": layer.kind}
            row.update(shape=layer.label, M=layer.M, K=layer.K, N=layer.N, r=layer.r, mode=mode)
            row.update(provider=name, baseline=baseline, weights=case.weights)
            row.update(dropout=case.dropout, feedforward=layer.feedforward)
            if layer.kind == "lora" and name == "base":
                row["role"] = "floor"
            if name in errors:
                row["error"] = errors[name]
            else:
                s = spread(samples[name])
                row.update(median_ms=s.median, p20_ms=s.p20, p80_ms=s.p80, times_ms=samples[name])
            if name == "fastpeft" and name in calls:
                row["kernels"] = kernel_times(calls[name], device)
            rows.append(row)
    if layer.kind == "ia3":  # the floor of IA3 too: the frozen linear bounds it from below
        for row in rows:
            if row["provider"] == "base":
                row["role"] = "floor"
    return rows


def proof_layers(setting: Setting, deadline: Deadline) -> dict:
    """Rows of every case the budget allows; the skipped ones are named with the reason."""
    M, scale, reps = (64, 32, 3) if setting.smoke else (8192, 1, 30)
    cases = proof_cases(M, scale)
    if setting.smoke:  # one case per kind: the code path, in seconds
        cases = [next(c for c in cases if c.layer.kind == k) for k in ("lora", "ia3", "adapter")]
    dtype = _DTYPES.get(setting.dtype, torch.bfloat16)
    rows, last = [], 0.0
    for i, case in enumerate(cases):
        # The last case predicts the next (the first ones also paid for compiling the kernels).
        if i and deadline.left() < last:
            skipped = [c.name() for c in cases[i:]]
            return {
                "status": "partial",
                "rows": rows,
                "cases_run": i,
                "cases_skipped": skipped,
                "reason": f"out of budget after {i} of {len(cases)} cases "
                f"({deadline.left():.0f} s left, the last case took {last:.0f} s)",
            }
        started = time.monotonic()
        rows += bench_case(case, dtype, setting.device, reps)
        last = time.monotonic() - started
    return {"rows": rows, "cases_run": len(cases), "cases_skipped": []}
