"""Part 3 of the proof suite: the headline layers at M=8192, most important first, until the
budget runs out, with per-kernel times from torch.profiler for the fastpeft rows (so a missed
target names the kernel that missed it) and for the baseline and floor rows (the cuBLAS kernels
the static model's references stand for: their names carry cuBLAS's tiles and cluster shape,
which decide the references' L2 traffic, fastpeft/static/sequences.gemm_rereads).

Cases come from the layers suite's case modules (fastpeft/bench/cases/, `proof_cases`) and vary
what the layers suite fixes: the dtype of the trained weights (fp32, PEFT's default, or bf16)
and LoRA dropout (0 or Paper A's 0.05). Providers are the layers suite's, the fastpeft one with
the case's weight dtype. No torch.compile providers: their compilation cost most of the layers
suite's time on the first GPU run (NOTES.md).
"""

import time
from functools import partial

import torch

from . import cases, layers
from .cases.layer_case import ProofCase, Setup, first_of_each_kind
from .proof_budget import Deadline, Setting
from .stats import spread
from .timing import time_interleaved

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Tile presets timed beside fastpeft's default on a GPU, as extra "fastpeft-<preset>" rows: the
# adapters' backward has two (fastpeft/triton_path/adapter.py `_widen`) that the static model
# cannot choose between until the L2 bandwidth is known, so the proof measures both.
PRESETS = {"adapter": ("wide",), "adapter_pair": ("wide",)}


def preset_calls(kind: str, make_call, device: torch.device) -> dict:
    """{"fastpeft-<preset>": a call from `make_call()` run under that adapter tile preset} for
    `kind` on a GPU (on a CPU the presets change nothing: no Triton launch)."""
    if device.type != "cuda" or kind not in PRESETS:
        return {}
    from ..triton_path.adapter import tile_preset

    def under(preset: str, call):
        def run():
            with tile_preset(preset):
                return call()

        return run

    return {f"fastpeft-{preset}": under(preset, make_call()) for preset in PRESETS[kind]}


def proof_cases(M: int, scale: int = 1) -> list[ProofCase]:
    """Every case of the layers suite's methods, most important first, as each case module
    ranks its own (layer_case.HEADLINE, MAIN, REST): the budget may stop anywhere."""
    ranked = [pair for module in cases.modules("layers") for pair in module.proof_cases(M, scale)]
    return [case for _, case in sorted(ranked, key=lambda pair: pair[0])]  # stable: registry order


def kernel_times(fn, device: torch.device, calls: int = 3, top: int = 12) -> list[dict]:
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
    layer = case.layer
    setup = Setup(weights=case.weights, dropout=case.dropout)
    providers = layers.build_providers(layer, dtype, device, setup)
    method = cases.of(layer.kind)
    baseline = method.BASELINE
    xs = [torch.randn(layer.M, layer.K, device=device, dtype=dtype) for _ in range(2)]
    errors = layers._check(providers, baseline, xs[0], dtype, method.FLOOR)
    dy = torch.randn(layer.M, layer.N, device=device, dtype=dtype)
    timed = {name: module for name, module in providers.items() if name not in errors}
    rows = []
    for mode in layers.MODES:
        calls = {name: layers._call(module, mode, xs, dy) for name, module in timed.items()}
        presets, failed = {}, {}
        if "fastpeft" in timed:
            make = partial(layers._call, timed["fastpeft"], mode, xs, dy)
            presets = preset_calls(layer.kind, make, device)
        calls.update(_runnable(presets, failed, device))
        samples = time_interleaved(calls, device, reps)
        for name in [*providers, *presets]:
            row = {"suite": "layers", "case": case.name(), "kind": layer.kind}
            row.update(shape=layer.label, M=layer.M, K=layer.K, N=layer.N, r=layer.r, mode=mode)
            row.update(provider=name, baseline=baseline, weights=case.weights)
            row.update(dropout=case.dropout, feedforward=layer.feedforward)
            if name == method.FLOOR:
                row["role"] = "floor"
            if name in errors or name in failed:
                row["error"] = errors.get(name) or failed[name]
            else:
                s = spread(samples[name])
                row.update(median_ms=s.median, p20_ms=s.p20, p80_ms=s.p80, times_ms=samples[name])
            if name in calls and (name.startswith("fastpeft") or name in (baseline, method.FLOOR)):
                row["kernels"] = kernel_times(calls[name], device)
            rows.append(row)
    return rows


def _runnable(calls: dict, failed: dict, device: torch.device) -> dict:
    """The calls that run once without raising; the others' errors go into `failed` (a preset
    that does not compile on this GPU's Triton costs its own row, not the part's)."""
    ok = {}
    for name, call in calls.items():
        try:
            call()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            ok[name] = call
        except Exception as exc:  # noqa: BLE001 (recorded in the row)
            failed[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return ok


def proof_layers(setting: Setting, deadline: Deadline) -> dict:
    """Rows of every case the budget allows; the skipped ones are named with the reason."""
    M, scale, reps = (64, 32, 3) if setting.smoke else (8192, 1, 30)
    planned = proof_cases(M, scale)
    if setting.smoke:
        planned = first_of_each_kind(planned, lambda c: c.layer.kind)
    dtype = _DTYPES.get(setting.dtype, torch.bfloat16)
    rows, last = [], 0.0
    for i, case in enumerate(planned):
        # The last case predicts the next (the first ones also paid for compiling the kernels).
        if i and deadline.left() < last:
            skipped = [c.name() for c in planned[i:]]
            return {
                "status": "partial",
                "rows": rows,
                "cases_run": i,
                "cases_skipped": skipped,
                "reason": f"out of budget after {i} of {len(planned)} cases "
                f"({deadline.left():.0f} s left, the last case took {last:.0f} s)",
            }
        started = time.monotonic()
        rows += bench_case(case, dtype, setting.device, reps)
        last = time.monotonic() - started
    return {"rows": rows, "cases_run": len(planned), "cases_skipped": []}
