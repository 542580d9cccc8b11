"""`fastpeft bench --suite static`: every launch the registry's methods issue for the bench's
headline cases, compiled for an arch without a GPU, inspected, and costed by the static model.

Everything here is a model or a static fact of the compiled code, never a measurement: rows say
so ("model": true), and the printed tables say "model".
"""

import json
import time
from pathlib import Path

import torch

from .. import registry
from ..bench.cases import layer_case
from . import archs, l2_bound, layer_set
from . import compile as compiler
from .calibration import beside_measurements, kernels_beside_measurements
from .costing import add_dropout_issue_time, assumed_l2_rates, dropout_cost, launch_record
from .launches import record, static_methods
from .model import ctas_per_sm

SHORT = {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}
DROPOUT_BUDGET = 16  # SASS instructions per generated dropout element (the gate's budget)
TARGETS = {  # method: (what, limit, "max"/"min"), the kernel issues' targets, for the verdicts
    # (a static model's own `targets(row)` replaces its entry: LoRA's name their rows)
    "ia3": ("predicted_fused_over_base", 1.03, "max"),
    "adapter": ("predicted_speedup_vs_eager", 2.0, "min"),
    "adapter_pair": ("predicted_speedup_vs_eager", 2.0, "min"),
    "spider": ("predicted_over_adamw", 1.5, "max"),
}


def _cases(method: registry.Method, static_model, quick: bool) -> list:
    if hasattr(static_model, "cases"):
        cases = static_model.cases()
    else:  # the bench's layer cases at their GPU size (M=8192, Llama-7B projections)
        cases = registry.load(method.bench).cases(torch.device("cuda"), "full")
    return cases[:1] if quick else cases


def collect(arch: archs.Arch, quick: bool, cache: Path | None = None):
    """[(method, model, case, weights, dropout, launches)] for every static case and variant
    (quick: each method's first case, every variant). The host code sizes its reductions from
    compiles for `arch`, as it does from a GPU's (compile.resident_oracle)."""

    def count(compiled) -> int:
        return ctas_per_sm(arch, compiled.registers, compiled.shared_bytes, compiled.num_warps)

    resident = compiler.resident_oracle(arch.sm, cache, count)
    plan = []
    for method in static_methods():
        static_model = registry.load(method.static)
        for case in _cases(method, static_model, quick):
            for weights, dropout in static_model.VARIANTS:
                found = record(method, static_model, case, weights, dropout, arch.sm, resident)
                plan.append((method, static_model, case, weights, dropout, found))
    return plan


def _reference_us(arch: archs.Arch, ops) -> float:
    return sum(op.predicted_us(arch) for op in ops)


def case_record(arch, method, static_model, case, weights, dropout, rows) -> dict:
    failed = [r["kernel"] for r in rows if r["predicted_us"] is None]
    fused = sum(r["predicted_us"] or 0.0 for r in rows)
    serial = sum(r.get("predicted_us_serial", r["predicted_us"]) or 0.0 for r in rows)
    moved = sum(r["dram_bytes"] for r in rows)
    untraced_ops = []
    if hasattr(static_model, "untraced_ops"):  # e.g. the hybrid path's cuBLAS products
        untraced_ops = static_model.untraced_ops(case, weights, dropout)
        untraced = _reference_us(arch, untraced_ops)
        fused, serial = fused + untraced, serial + untraced
        moved += sum(op.dram_bytes for op in untraced_ops)
    out = {"method": method.name, "case": case.name(), "adapter_dtype": weights,
           "dropout": dropout, "launches": len(rows), "fused_dram_bytes": moved,
           "model": True}  # fmt: skip
    if hasattr(static_model, "fields"):
        out.update(static_model.fields(weights))
    if isinstance(case, layer_case.LayerCase):
        size = "H" if method.name.startswith("adapter") else "r"
        out.update(M=case.M, K=case.K, N=case.N, **{size: case.r})
    else:
        out.update(case.fields())
    reference_ops = static_model.references(case, weights, dropout)
    refs = {k: _reference_us(arch, ops) for k, ops in reference_ops.items()}
    for name, us in refs.items():
        out[f"predicted_{name}_us"] = round(us, 2)
    if failed:  # a launch that does not compile has no time: the case has none either
        out.update(predicted_fused_us=None, predicted_verdict="fails to compile: "
                   + ", ".join(sorted(set(failed))))  # fmt: skip
        return out
    out["predicted_fused_us"] = round(fused, 2)
    if serial != fused:  # the pessimistic bound: dropout's instructions issued after the rest
        out["predicted_fused_serial_us"] = round(serial, 2)
    if "base" in refs:
        out["predicted_fused_over_base"] = round(fused / refs["base"], 3)
        if serial != fused:
            out["predicted_fused_over_base_serial"] = round(serial / refs["base"], 3)
    if "peft" in refs:
        out["predicted_peft_over_fused"] = round(refs["peft"] / fused, 3)
    if "eager" in refs:
        out["predicted_speedup_vs_eager"] = round(refs["eager"] / fused, 3)
    if "adamw" in refs:
        out["predicted_over_adamw"] = round(fused / refs["adamw"], 3)
    targets = (static_model.targets(out) if hasattr(static_model, "targets")
               else [TARGETS[method.name]])  # fmt: skip
    if any(r.get("l2_bytes") for r in rows):  # the tile walks' L2 traffic: see l2_bound.py
        out.update(_l2_fields(arch, rows, untraced_ops, reference_ops, targets))
    verdicts, met_all = [], True
    for what, limit, kind in targets:
        value = out.get(what)
        if value is None:
            continue
        met = value <= limit if kind == "max" else value >= limit
        met_all &= met
        verdicts.append(f"{what} {'<=' if kind == 'max' else '>='} {limit}")
    if verdicts:
        out["target"] = "; ".join(verdicts)
        out["predicted_verdict"] = "meets" if met_all else "misses"
    return out


def _l2_fields(arch, rows, untraced_ops, reference_ops, targets) -> dict:
    """A case's L2 traffic (l2_bound.py): the profiles of its launches (with what runs untraced
    beside them) and of its references, and the least L2 bandwidth at which its targets hold."""
    references = {name: l2_bound.op_profile(arch, ops) for name, ops in reference_ops.items()}
    out = {
        "l2_profile": l2_bound.profile(rows) + l2_bound.op_profile(arch, untraced_ops),
        "l2_reference_profiles": references,
    }
    limits = l2_bound.bounds(targets, references)
    if limits:
        out["l2_tbps_needed"] = l2_bound.needed(out["l2_profile"], limits)
        free = l2_bound.bounds(targets, l2_bound.without_l2(references))
        out["l2_tbps_needed_references_free"] = l2_bound.needed(out["l2_profile"], free)
    return out


def file_name(arch_name: str) -> str:
    return f"static_{arch_name.replace('_', '')}.json"  # static_sm90.json


def run_static(arch_name: str, out: Path, quick: bool, jobs: int = 2, cache: Path | None = None):
    """Collect, compile, inspect and cost; write static_<arch>.json into `out`; return it."""
    arch = archs.get(arch_name)
    problem = compiler.backend_problem(arch.sm)
    if problem:
        raise RuntimeError(f"fastpeft bench --suite static: {problem}")
    started = time.time()
    plan = collect(arch, quick, cache)
    launches = [launch for *_, found in plan for launch in found]
    compiled = compiler.compile_launches(launches, arch.sm, jobs, cache)
    rows_of, cases, records = {}, [], []
    for launch, result in zip(launches, compiled, strict=True):
        row = launch_record(arch, launch, result)
        records.append(row)
        rows_of.setdefault(id(launch), row)
    dropout = dropout_cost(records)
    add_dropout_issue_time(arch, records, dropout)
    assumed_l2_rates(records)
    for method, static_model, case, weights, p, found in plan:
        rows = [rows_of[id(launch)] for launch in found]
        cases.append(case_record(arch, method, static_model, case, weights, p, rows))
    result = {
        "kind": "static model (no measurement)",
        "arch": arch.name,
        "device": arch.device,
        "ceilings": {k: {"value": c.value, "source": c.source} for k, c in arch.ceilings.items()},
        "quick": quick,
        "seconds": round(time.time() - started, 1),
        "dropout_budget_instructions_per_element": DROPOUT_BUDGET,
        "dropout": dropout,
        "launches": records,
        "cases": cases,
        "layer_sets": layer_set.rows(cases),
        "l2_tbps_implied_by_matmul": l2_bound.implied_by_matmul(arch),
        "measured_beside_model": beside_measurements(cases, arch.name),
        "kernels_measured_beside_model": kernels_beside_measurements(cases, records, arch.name),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / file_name(arch.name)).write_text(json.dumps(result, indent=1) + "\n")
    return result


def format_static(result: dict) -> str:
    """The printed tables: per case the model's predictions beside the targets; then the gates'
    facts (spills, FMA-only products, launches under a wave, dropout cost)."""
    lines = [f"static model for {result['arch']} ({result['device']}): predictions, not "
             "measurements", ""]  # fmt: skip
    head = f"{'case':66} {'fused us':>9} {'ref us':>9} {'ratio':>7}  target"
    lines += ["model: " + head]
    for c in result["cases"]:
        ref = next((c[k] for k in ("predicted_base_us", "predicted_eager_us",
                                   "predicted_adamw_us") if k in c), None)  # fmt: skip
        ratio = next((c[k] for k in ("predicted_fused_over_base", "predicted_speedup_vs_eager",
                                     "predicted_over_adamw") if k in c), None)  # fmt: skip
        label = _label(c)
        target = f"{c.get('target', '')} ({c.get('predicted_verdict', '-')})"
        lines.append(f"model: {label[:66]:66} {c['predicted_fused_us'] or 0:9.1f} {ref or 0:9.1f} "
                     f"{ratio or 0:7.3f}  {target}")  # fmt: skip
    for r in result.get("layer_sets", []):
        label = f"{r['case']} {SHORT.get(r['adapter_dtype'], '')} p={r['dropout']:g}"
        ratio = r["predicted_step_over_frozen"]
        lines.append(f"model: {label[:66]:66} {r['predicted_adapters_us']:9.1f} "
                     f"{r['predicted_frozen_linears_us']:9.1f} {ratio:7.3f}"
                     f"  {r['target']} ({r['predicted_verdict']})")  # fmt: skip
    rows = [r for r in result["launches"] if r["status"] == "ok"]
    spills = sorted({(r["kernel"], r["spill_bytes"]) for r in rows if r["spill_bytes"]})
    fma = sorted({r["kernel"] for r in rows if r["tensor_cores"] is False})
    thin = sorted({r["kernel"] for r in rows if r["waves"] is not None and r["waves"] < 1})
    lines += ["", f"static: launches {len(result['launches'])}, failed "
              f"{sum(r['status'] != 'ok' for r in result['launches'])}"]  # fmt: skip
    lines.append(f"static: spilling {len(spills)}: " + ", ".join(f"{k} {b} B" for k, b in spills))
    lines.append(f"static: products on FMA units, not tensor cores: {', '.join(fma) or 'none'}")
    lines.append(f"static: launches under one wave: {', '.join(thin) or 'none'}")
    lines += _l2_lines(rows) + _l2_needed_lines(result)
    if result.get("l2_tbps_implied_by_matmul"):
        lines.append(f"static: the measured tc16 ceiling's GEMM ran at "
                     f"{result['l2_tbps_implied_by_matmul']:.1f} TB/s from L2 if cuBLAS walks "
                     "it as the model assumes (no multicast): a measured L2 below that means "
                     "the references' walks overstate their traffic")  # fmt: skip
    for m in result["measured_beside_model"]:
        lines.append(f"model vs measured: {m['case']} {m['what']} ({m['dtype']}): model "
                     f"{m['model_us']:.0f} us, measured {m['measured_us']:.0f} us on "
                     f"{m['measured_on']} ({m['measured_backend']}): error "
                     f"{m['model_error']:+.0%}")  # fmt: skip
    for m in result.get("kernels_measured_beside_model", []):
        l2 = (f"; its L2 traffic at {m['l2_tbps_at_measured']:.1f} TB/s"
              if "l2_tbps_at_measured" in m else "")  # fmt: skip
        lines.append(f"model vs measured: {m['kernel']} in {m['case']} ({m['dtype']}, p="
                     f"{m['dropout']:g}): model {m['model_us']:.0f} us, measured "
                     f"{m['measured_us']:.0f} us on {m['measured_on']}: error "
                     f"{m['model_error']:+.0%}{l2}")  # fmt: skip
    for d in result["dropout"]:
        lines.append(f"static: dropout in {d['kernel']}: {d['instructions_per_element']} "
                     f"{d['source']} instructions per element (budget "
                     f"{result['dropout_budget_instructions_per_element']})")  # fmt: skip
    return "\n".join(lines)


def _label(c: dict) -> str:
    """A case or layer set row's printed name: case, weights, TF32, path, dropout."""
    flags = (" tf32" if c.get("allow_tf32") else "") + (
        f" {c['path']}" if c.get("path") in ("hybrid", "unshared") else "")  # fmt: skip
    return f"{c['case']} {SHORT.get(c['adapter_dtype'], '')}{flags} p={c['dropout']:g}"


def _l2_lines(rows: list[dict]) -> list[str]:
    """Per kernel with modelled L2 traffic, the most L2 bandwidth a predicted time assumes (the
    model has no L2 ceiling until a GPU run measures one), with its L2 / DRAM bytes."""
    worst: dict[str, dict] = {}
    for r in rows:
        if r.get("l2_tbps_assumed") and r["l2_tbps_assumed"] > worst.get(r["kernel"], {}).get(
            "l2_tbps_assumed", 0
        ):
            worst[r["kernel"]] = r
    return [f"static: L2 traffic in {k}: its predicted time assumes {r['l2_tbps_assumed']:.1f} "
            f"TB/s from L2 ({r['l2_bytes'] / r['dram_bytes']:.1f}x its DRAM bytes; {r['case']})"
            for k, r in sorted(worst.items())]  # fmt: skip


def _l2_needed_lines(result: dict) -> list[str]:
    """The L2 bandwidth each case's targets and each layer set's need (l2_bound.py): with the
    references' GEMM walks as modelled, and with the references' L2 traffic free."""

    def shown(need: float | None) -> str:
        if need is None:
            return "out of reach even with L2 free"
        return "any L2" if need <= 0.01 else f">= {need:.1f} TB/s"

    lines = []
    for c in [*result["cases"], *result.get("layer_sets", [])]:
        if "l2_tbps_needed" not in c:
            continue
        need = shown(c["l2_tbps_needed"])
        free = shown(c.get("l2_tbps_needed_references_free"))
        other = f" ({free} with the references' L2 free)" if free != need else ""
        lines.append(f"static: L2 read bandwidth {_label(c)} needs for its target: {need}{other}")
    return lines
