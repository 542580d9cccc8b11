"""The layers suite: one LoRA / IA3 linear or one bottleneck adapter at LLM shapes, per provider,
in three modes: "fwd" (training forward), "bwd" (backward of a retained graph), "full" (both).

Providers: LoRA and IA3 — "base" (the frozen linear alone, input grads only: the floor), "peft"
(PEFT defaults: fp32 adapters), "peft-bf16" (adapters in the base dtype; 16-bit bases only),
"peft+compile" (torch.compile of the PEFT model), "fastpeft" (the PEFT model, patched).
Adapters — "eager" (fastpeft's reference module unpatched), "eager+compile", "fastpeft".
Every provider's output and input gradient are checked against the baseline ("peft" / "eager")
with dropout off before it is timed: a provider that disagrees gets an error, not a number. The
providers of one case and mode are timed interleaved (`timing.time_interleaved`), so each row
carries per-repetition times that pair with its baseline's.
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..adapters import AdapterConfig
from ..adapters.modules import BottleneckAdapter
from ..patch import patch
from .stats import spread
from .timing import time_interleaved

MODES = ("fwd", "bwd", "full")
FLOOR = "base"  # the frozen linear alone: no method can cost less (LoRA and IA3 cases)
LORA_RANKS = (16, 64, 128)
# (label, K, N): Llama-7B projections: q/o, gate/up, down, and k/v with GQA (8 of 32 heads).
LLM_SHAPES = (("q/o", 4096, 4096), ("gate/up", 4096, 11008), ("down", 11008, 4096))
GQA_SHAPE = ("k/v gqa", 4096, 1024)


@dataclass
class LayerCase:
    kind: str  # "lora", "ia3", "adapter"
    label: str
    M: int
    K: int
    N: int
    r: int = 0  # LoRA rank or adapter bottleneck
    feedforward: bool = False  # IA3 input scaling (down_proj)

    def name(self) -> str:
        extra = f" r={self.r}" if self.kind == "lora" else ""
        extra += f" H={self.r}" if self.kind == "adapter" else ""
        extra += " (input scale)" if self.feedforward else ""
        return f"{self.kind} {self.label} M={self.M} {self.K}->{self.N}{extra}"


def layer_cases(scale: int, M: int, ranks=LORA_RANKS) -> list[LayerCase]:
    """All cases with every dimension divided by `scale` (1 on a GPU)."""
    shapes = [(label, K // scale, N // scale) for label, K, N in (*LLM_SHAPES, GQA_SHAPE)]
    cases = [LayerCase("lora", lb, M, K, N, r) for lb, K, N in shapes for r in ranks]
    for label, K, N in shapes:
        if label != "gate/up":  # Paper A's IA3 targets: k, v (output scale), down (input scale)
            cases.append(LayerCase("ia3", label, M, K, N, feedforward=label == "down"))
    d = 4096 // scale
    cases += [LayerCase("adapter", "post", M, d, d, H) for H in (64 // scale or 8, 256 // scale)]
    return cases


class _OneLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.proj = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x):
        return self.proj(x)


class _OneAdapter(nn.Module):
    def __init__(self, adapter: BottleneckAdapter):
        super().__init__()
        self.adapter = adapter

    def forward(self, x):
        return self.adapter(x)


def _peft_linear(case: LayerCase, dtype, device, autocast_adapter_dtype: bool) -> nn.Module:
    from peft import IA3Config, LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = _OneLinear(case.K, case.N).to(device=device, dtype=dtype).requires_grad_(False)
    if case.kind == "lora":
        config = LoraConfig(
            r=case.r,
            lora_alpha=2 * case.r,
            lora_dropout=0.05,
            target_modules=["proj"],
            init_lora_weights=False,
        )
    else:
        config = IA3Config(
            target_modules=["proj"], feedforward_modules=["proj"] if case.feedforward else []
        )
    model = get_peft_model(base, config, autocast_adapter_dtype=autocast_adapter_dtype)
    with torch.no_grad():  # IA3 starts at ones (the identity): make it do something
        for name, param in model.named_parameters():
            if ".ia3_l." in name:
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
    return model


def build_providers(case: LayerCase, dtype, device, compile_: bool) -> dict[str, nn.Module]:
    """Provider name -> module for `case`; the first entry after "base" is the baseline."""
    if compile_:
        # Every case runs the same forward code at new shapes: without a reset dynamo recompiles
        # it case after case until its recompile limit (8), then silently runs it eagerly and
        # the "+compile" rows would time eager code.
        torch._dynamo.reset()
    if case.kind == "adapter":
        torch.manual_seed(0)
        config = AdapterConfig(bottleneck_size=case.r, dropout=0.05)
        eager = _OneAdapter(BottleneckAdapter(case.K, config, torch.float32, device=device))
        providers = {"eager": eager}
        if compile_:
            providers["eager+compile"] = torch.compile(copy.deepcopy(eager))
        providers["fastpeft"] = copy.deepcopy(eager)
    else:
        peft_model = _peft_linear(case, dtype, device, autocast_adapter_dtype=True)
        base = copy.deepcopy(peft_model.get_base_model())
        base.proj = base.proj.base_layer  # the plain frozen linear inside the PEFT layer
        providers = {"base": base, "peft": peft_model}
        if dtype != torch.float32:
            providers["peft-bf16"] = _peft_linear(case, dtype, device, False)
        if compile_:
            providers["peft+compile"] = torch.compile(copy.deepcopy(peft_model))
        providers["fastpeft"] = copy.deepcopy(peft_model)
    report = patch(providers["fastpeft"])
    if len(report.patched) != 1:
        raise RuntimeError(f"fastpeft did not patch the benchmark layer: {report}")
    return providers


def _check(providers: dict, baseline: str, x: torch.Tensor, dtype) -> dict[str, str]:
    """Provider -> error message for those whose output or input grad differs (dropout off)."""
    errors = {}
    outs = {}
    for name, module in providers.items():
        if name == "base":
            continue
        module.eval()
        xi = x.detach().clone().requires_grad_()
        y = module(xi)
        y.float().square().mean().backward()
        outs[name] = (y.detach().float(), xi.grad.float())
        module.train()
        module.zero_grad(set_to_none=True)
    want_y, want_dx = outs[baseline]
    rel = 1e-4 if dtype == torch.float32 else 3e-2
    for name, (y, dx) in outs.items():
        for what, got, want in (("output", y, want_y), ("input grad", dx, want_dx)):
            err = float((got - want).abs().max())
            limit = rel * float(want.abs().max()) + 1e-6
            if not err <= limit and name not in errors:
                errors[name] = f"{what} differs from {baseline} by {err:.3e} (limit {limit:.3e})"
    return errors


def flops_and_bytes(case: LayerCase, mode: str, elem: int) -> tuple[float, float]:
    """Analytic FLOPs and minimum bytes moved (SPEC §1–§3 cost model)."""
    M, K, N, r = case.M, case.K, case.N, case.r
    if case.kind == "adapter":  # down [H, d] and up [d, H]
        fwd_f, bwd_f = 4 * M * K * r, 8 * M * K * r
        fwd_b = elem * (2 * M * K) + 4 * (M * r + 2 * K * r)
        bwd_b = elem * (3 * M * K) + 4 * (2 * M * r + 4 * K * r)
    else:
        lora = case.kind == "lora"
        fwd_f = 2 * M * K * N + (2 * M * r * (K + N) if lora else 0)
        bwd_f = 2 * M * K * N + (4 * M * r * (K + N) if lora else 0)
        fwd_b = elem * (M * K + N * K + M * N)
        bwd_b = elem * (M * N + M * K + N * K + M * K)
    if mode == "fwd":
        return fwd_f, fwd_b
    if mode == "bwd":
        return bwd_f, bwd_b
    return fwd_f + bwd_f, fwd_b + bwd_b


def baseline_of(kind: str) -> str:
    """The provider a kind's speedups are against: PEFT, or fastpeft's eager reference module
    for bottleneck adapters (PEFT has none)."""
    return "eager" if kind == "adapter" else "peft"


def bench_case(case: LayerCase, dtype, device, compile_: bool, reps: int) -> list[dict]:
    """Rows (one per provider × mode) for one case, each with its per-repetition `times_ms`."""
    providers = build_providers(case, dtype, device, compile_)
    baseline = baseline_of(case.kind)
    xs = [torch.randn(case.M, case.K, device=device, dtype=dtype) for _ in range(2)]
    errors = _check(providers, baseline, xs[0], dtype)
    dy = torch.randn(case.M, case.N, device=device, dtype=dtype)
    timed = {name: module for name, module in providers.items() if name not in errors}
    samples = {
        mode: time_interleaved(
            {name: _call(module, mode, xs, dy) for name, module in timed.items()}, device, reps
        )
        for mode in MODES
    }
    rows = []
    for name in providers:
        for mode in MODES:
            row = {"suite": "layers", "case": case.name(), "kind": case.kind, "shape": case.label}
            row.update(M=case.M, K=case.K, N=case.N, r=case.r, mode=mode, provider=name)
            row["baseline"] = baseline
            if name in errors:
                row["error"] = errors[name]
            else:
                times = samples[mode][name]
                s = spread(times)
                row.update(median_ms=s.median, p20_ms=s.p20, p80_ms=s.p80, times_ms=times)
            rows.append(row)
    return rows


def _call(module, mode, xs, dy):
    """A no-argument call running `mode` once; inputs alternate so caches do not flatter."""
    leaves = [x.detach().clone().requires_grad_() for x in xs]
    calls = iter(range(1 << 62))
    if mode == "fwd":
        return lambda: module(leaves[next(calls) % 2])
    if mode == "full":
        return lambda: module(leaves[next(calls) % 2]).backward(dy)
    y = module(leaves[0])  # bwd: the backward of one retained graph, again and again
    return lambda: y.backward(dy, retain_graph=True)
