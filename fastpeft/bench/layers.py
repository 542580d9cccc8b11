"""The layers suite: one method's layer (a LoRA / IA3 linear, a bottleneck adapter, the gate/up
adapter pair) at LLM shapes, per provider, in three modes: "fwd" (training forward), "bwd"
(backward of a retained graph), "full" (both).

The registry's methods whose case module (fastpeft/bench/cases/) belongs to this suite say their
cases, providers, baseline and cost; this module builds, checks and times them. Every provider's
output and input gradient are checked against the baseline (PEFT's, or the eager module's for
adapters) with dropout off before it is timed: a provider that disagrees gets an error, not a
number. The providers of one case and mode are timed interleaved (`timing.time_interleaved`), so
each row carries per-repetition times that pair with its baseline's.
"""

import torch
import torch.nn as nn

from .. import registry
from ..patch import patch
from . import cases
from .cases.layer_case import LayerCase, Setup
from .stats import spread
from .timing import time_interleaved

MODES = ("fwd", "bwd", "full")


def build_providers(case: LayerCase, dtype, device, setup: Setup) -> dict[str, nn.Module]:
    """Provider name -> module for `case` (its case module's), "fastpeft" patched."""
    if setup.compile_:
        # Every case runs the same forward code at new shapes: without a reset dynamo recompiles
        # it case after case until its recompile limit (8), then silently runs it eagerly and
        # the "+compile" rows would time eager code.
        torch._dynamo.reset()
    providers = cases.of(case.kind).providers(case, dtype, device, setup)
    report = patch(providers["fastpeft"])
    label = registry.get(case.kind).label
    if label not in {report.kinds[name] for name in report.patched}:
        raise RuntimeError(f"fastpeft did not patch the benchmark layer ({label}): {report}")
    return providers


def _check(providers: dict, baseline: str, x: torch.Tensor, dtype, floor=None) -> dict[str, str]:
    """Provider -> error message for those whose output or input grad differs (dropout off);
    the floor is not the method and is not checked."""
    errors = {}
    outs = {}
    for name, module in providers.items():
        if name == floor:
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
    """Analytic FLOPs and minimum bytes moved (SPEC §1–§3 cost model) of `mode`."""
    cost = cases.of(case.kind).cost(case, elem)
    if mode == "fwd":
        return cost.fwd_flops, cost.fwd_bytes
    if mode == "bwd":
        return cost.bwd_flops, cost.bwd_bytes
    return cost.fwd_flops + cost.bwd_flops, cost.fwd_bytes + cost.bwd_bytes


def bench_case(case: LayerCase, dtype, device, compile_: bool, reps: int) -> list[dict]:
    """Rows (one per provider × mode) for one case, each with its per-repetition `times_ms`."""
    providers = build_providers(case, dtype, device, Setup(compile_=compile_))
    method = cases.of(case.kind)
    baseline = method.BASELINE
    xs = [torch.randn(case.M, case.K, device=device, dtype=dtype) for _ in range(2)]
    errors = _check(providers, baseline, xs[0], dtype, method.FLOOR)
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
            if name == method.FLOOR:
                row["role"] = "floor"
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
