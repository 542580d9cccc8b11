"""`fastpeft bench --suite static --quick`: every registered method's headline launches compiled
for sm_90 without a GPU, inspected and costed; and the gates the kernel issues must pass.

The suite runs once per test session in a subprocess (Triton decides at kernel-definition time
whether to interpret, and conftest.py turns the interpreter on for this process).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastpeft import registry

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FIELDS = {"method", "case", "kernel", "arch", "registers", "spill_bytes", "shared_bytes",
                 "ctas", "waves", "tensor_cores", "predicted_us"}  # fmt: skip
CASE_FIELDS = {"method", "case", "adapter_dtype", "dropout", "predicted_fused_us"}


@pytest.fixture(scope="module")
def static(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("static")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))  # not the user's cache
    command = [sys.executable, "-m", "fastpeft", "bench", "--suite", "static", "--quick",
               "--arch", "sm_90", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1500, check=False)  # fmt: skip
    if proc.returncode != 0 and "NVIDIA backend does not load" in proc.stderr:
        pytest.skip(f"Triton cannot compile for sm_90 here: {proc.stderr[-500:]}")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((out / "static_sm90.json").read_text())
    result["printed"] = proc.stdout
    return result


def test_every_static_method_is_compiled_costed_and_labelled_a_model(static):
    methods = {m.name for m in registry.METHODS.values() if m.static}
    assert {r["method"] for r in static["launches"]} == methods
    assert {c["method"] for c in static["cases"]} == methods
    assert all(r["status"] == "ok" for r in static["launches"]), [
        (r["kernel"], r.get("error")) for r in static["launches"] if r["status"] != "ok"
    ]
    assert all(LAUNCH_FIELDS <= set(r) for r in static["launches"])
    assert all(CASE_FIELDS <= set(c) and c["model"] for c in static["cases"])
    assert static["kind"].startswith("static model")
    printed = [line for line in static["printed"].splitlines() if line.strip()]
    assert all(line.startswith(("model", "static", "written")) for line in printed), printed


def test_case_ratios_follow_from_the_launches(static):
    for case in static["cases"]:
        rows = [r for r in static["launches"] if r["method"] == case["method"]
                and r["case"].startswith(case["case"])]  # fmt: skip
        assert rows and case["launches"] >= 1
        if "predicted_base_us" in case:
            want = case["predicted_fused_us"] / case["predicted_base_us"]
            assert case["predicted_fused_over_base"] == pytest.approx(want, rel=1e-2)
            assert case["predicted_peft_over_fused"] > 0
        if case["method"].startswith("adapter"):
            assert case["H"] > 0 and case["predicted_speedup_vs_eager"] > 0


def test_launches_report_the_l2_traffic_their_times_assume(static):
    # The adapters', LoRA's and IA3's tile walks re-read operands from L2 (each kernel module's
    # REREADS, checked against the kernels' own loads in test_l2_rereads.py); the model takes
    # that as free, and says so. SPIDER's streaming passes have no table (their DRAM bytes).
    rows = [r for r in static["launches"] if r["method"] != "spider"]
    assert rows and all(r["l2_bytes"] >= r["dram_bytes"] for r in rows)
    walks = [r for r in rows if r["kernel"] not in ("sum_partials_kernel",
             "adapter_activation_kernel", "ia3_out_dl_kernel")]  # fmt: skip
    assert {r["method"] for r in walks} >= {"adapter", "adapter_pair", "lora", "ia3"}
    assert all(r["l2_bytes"] > r["dram_bytes"] and r["l2_tbps_assumed"] > 0 for r in walks)
    printed = [line for line in static["printed"].splitlines() if "L2 traffic in" in line]
    assert {line.split()[4].rstrip(":") for line in printed} >= {r["kernel"] for r in walks}


def test_cases_say_the_l2_bandwidth_their_targets_need(static):
    # Each case with a ratio target: the least L2 bandwidth from which on its launches fit the
    # targets' shares of the references' times, the references' own GEMM walks included.
    from fastpeft.static import l2_bound

    cases = [c for c in static["cases"] if "l2_tbps_needed" in c]
    assert {c["method"] for c in cases} >= {"adapter", "adapter_pair", "lora", "ia3"}
    for c in cases:
        limits = l2_bound.bounds(_targets(c), c["l2_reference_profiles"])
        need = c["l2_tbps_needed"]
        if need is None:  # a target is missed even with L2 free
            assert c["predicted_verdict"] == "misses"
            continue
        assert all(l2_bound.fits(c["l2_profile"], limits, need * f) for f in (1, 1.5, 4, 100))
        if need > 0.02:  # rounded up to 0.01 from a bisection to 0.005: 0.02 less must not fit
            assert not l2_bound.fits(c["l2_profile"], limits, need - 0.02), c["case"]
        # With the references' L2 free their times no longer grow on a slow L2: a tighter
        # bound, so at least as much L2 is needed.
        free = c["l2_tbps_needed_references_free"]
        assert free is None or free >= need, c["case"]


def _targets(case: dict) -> list[tuple]:
    """A case row's targets, from its `target` text ("field <= limit; ...")."""
    found = []
    for part in case["target"].split("; "):
        what, op, limit = part.split()
        found.append((what, float(limit), "max" if op == "<=" else "min"))
    return found


def test_a_bf16_gemm_runs_on_tensor_cores(static):
    # The check can tell: the base GEMM of LoRA's forward with 16-bit adapters uses wgmma.
    rows = [r for r in static["launches"] if r["kernel"] == "lora_fwd_kernel"
            and "bfloat16" in r["case"]]  # fmt: skip
    assert rows and all(r["tensor_cores"] for r in rows)


# --- the gates (against the committed configurations) -------------------------------------
# Spills and FMA-only products are gone from every method's launches (issue 17: 3xTF32 and the
# LoRA tiles); every method's dropout is within its instruction budget (issue 18 brought the
# adapters' there: the keep scale moved to the accumulators, 16-bit z no longer split for
# 3xTF32, deeper dW_down steps). LoRA's and IA3's launches fill a wave; the adapters' [M, H]
# launches do not (issue 18): at M=8192 they are 128 row tiles on 132 SMs (the model counts 3%
# idle), and the ways to more CTAs add traffic (split-K partials of pre and a finishing pass for
# act, or 32-row tiles reading W from L2 twice as often): not done. Splitting the weight
# gradients to LoRA's exact wave was tried: the model then put the H=256 bf16 adapter at 1.83x
# eager, under its 2x target (2.23x without).

SMALL_US = 5.0  # a launch modelled under this long cannot waste more than that, however shaped
NOT_YET = "issue 18: the adapters' [M, H] launches cover 128 of 132 SMs, under a wave"


def _under_a_wave(static, methods):
    """Launches of `methods` under one wave, except those modelled under SMALL_US (the
    fixed-order sums of rank-16 partials have fewer elements than one wave has threads)."""
    return {(r["method"], r["kernel"], r["ctas"], r["waves"]) for r in static["launches"]
            if r["method"] in methods and r["waves"] < 1
            and (r["predicted_us"] or 0) >= SMALL_US}  # fmt: skip


def _over_budget(static, kernels):
    budget = static["dropout_budget_instructions_per_element"]
    return [(d["kernel"], d["mask"], d["instructions_per_element"]) for d in static["dropout"]
            if d["kernel"] in kernels and d["instructions_per_element"] > budget]  # fmt: skip


def _kernels_of(static, methods):
    return {r["kernel"] for r in static["launches"] if r["method"] in methods}


def test_gate_no_register_spills(static):
    spilling = {(r["kernel"], r["spill_bytes"]) for r in static["launches"] if r["spill_bytes"]}
    assert not spilling


def test_gate_every_matrix_product_on_tensor_cores(static):
    fma = {(r["kernel"], r["case"]) for r in static["launches"] if r["tensor_cores"] is False}
    assert not fma


LORA = {"lora", "lora_shared"}  # the LoRA path's launches, shared-input ones included


def test_gate_every_lora_launch_fills_a_wave_at_8192_tokens(static):
    assert not _under_a_wave(static, LORA)


def test_gate_every_ia3_launch_fills_a_wave_at_8192_tokens(static):
    assert _kernels_of(static, {"ia3"}) >= {"ia3_out_bwd_kernel", "ia3_scale_kernel"}
    assert not _under_a_wave(static, {"ia3"})


@pytest.mark.xfail(strict=True, reason=NOT_YET)
def test_gate_every_other_launch_fills_a_wave_at_8192_tokens(static):
    others = {m for m in registry.METHODS if m not in LORA | {"ia3", "spider"}}
    assert not _under_a_wave(static, others)


def test_gate_lora_dropout_within_its_instruction_budget(static):
    assert [d for d in static["dropout"] if d["kernel"].startswith("lora_")]
    assert not _over_budget(static, _kernels_of(static, LORA))


def test_gate_other_dropout_within_its_instruction_budget(static):
    others = _kernels_of(static, set(registry.METHODS) - LORA) - _kernels_of(static, LORA)
    assert not _over_budget(static, others)
