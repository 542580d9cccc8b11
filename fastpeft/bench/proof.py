"""`fastpeft bench --suite proof`: the GPU proof kit. In order, each part under what is left of
one time budget (`proof_budget`): the `gpu` test tier, the device's ceilings, the headline
layers, the SPIDER step against fused AdamW, and one LLaVA-1.5-7B training step. Writes
`proof.json` and `summary.md` (targets beside measured figures) after every part, so a run cut
short keeps what it measured, and keeps the out folder within what a device run returns.

`--smoke` runs the same code on a CPU at tiny shapes; everything it writes says "smoke".
"""

import time
from pathlib import Path

import torch

from . import environment, results
from .compare import compare_groups
from .proof_budget import Deadline, Part, Setting, run_parts
from .proof_layers import proof_layers
from .proof_out import bundle
from .proof_parts import ceilings, e2e_step, spider
from .proof_summary import format_summary
from .proof_targets import judge
from .proof_tests import LOG, XML, gpu_tests
from .suites import finish_layers

DEFAULT_BUDGET_S = 420.0
JSON, SUMMARY = "proof.json", "summary.md"
# Priority of the files kept in the out folder (gpu_proof.sh writes the last three).
KEEP = (SUMMARY, JSON, XML, LOG, "proof.log", "install.log", "stages.txt")

# Shares of the time left and minimum seconds to start (full runs; smoke runs need ~nothing).
# The gpu tier took > 230 s for 90 tests on an H200, the layers ~10 s a case without compile.
PARTS = (
    Part("gpu_tests", 0.40, 30.0),
    Part("ceilings", 0.04, 5.0),
    Part("layers", 0.28, 20.0),
    Part("spider", 0.08, 15.0),
    Part("e2e", 0.20, 60.0),
)
_SMOKE_MINIMUM_S = 0.5


def _layers_with_meaning(peaks: dict, dtype: str):
    def run(setting: Setting, deadline: Deadline) -> dict:
        result = proof_layers(setting, deadline)
        if peaks:  # percentages of the ceilings need them; speedups do not
            finish_layers(result["rows"], peaks, dtype)
        else:
            compare_groups(result["rows"], lambda r: (r["case"], r["mode"]))
        return result

    return run


def run_proof(
    out: Path,
    budget_s: float,
    smoke: bool,
    device: str | None,
    dtype: str | None,
    clock=time.monotonic,
) -> dict:
    """Run the proof suite into `out` (created if missing, its parent must exist); returns the
    result written to proof.json."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or ("bfloat16" if dev.type == "cuda" else "float32")
    out.mkdir(exist_ok=True)
    setting = Setting(dev, dtype, smoke, out)
    budget = Deadline(budget_s, clock)
    result = {
        "suite": "proof",
        "smoke": smoke,
        "budget_s": budget_s,
        "device": environment.device_name(dev),
        "git_sha": environment.git_sha(),
        "versions": environment.versions(),
        "settings": {"dtype": dtype, "compile": False},
        "parts": {},
        "targets": [],
        "seconds": 0.0,
        "complete": False,
    }
    print(
        f"fastpeft proof{' --smoke' if smoke else ''} on {result['device']}, {dtype}, "
        f"budget {budget_s:.0f} s",
        flush=True,
    )

    def record(entry: dict) -> None:
        if smoke:
            entry["smoke"] = True
        result["parts"][entry["part"]] = entry
        result["seconds"] = round(budget.used(), 1)
        result["targets"] = judge(result["parts"])
        results.write_json(out, JSON.removesuffix(".json"), result)
        (out / SUMMARY).write_text(format_summary(result))
        print(
            f"  {entry['part']}: {entry['status']} in {entry.get('seconds', 0):.0f} s "
            f"(limit {entry['limit_s']:.0f} s) {entry.get('reason', '')}",
            flush=True,
        )

    peaks: dict = {}

    def ceilings_kept(s: Setting, d: Deadline) -> dict:
        found = ceilings(s, d)
        peaks.update(found["peaks"])
        return found

    functions = {
        "gpu_tests": gpu_tests,
        "ceilings": ceilings_kept,
        "layers": _layers_with_meaning(peaks, dtype),
        "spider": spider,
        "e2e": e2e_step,
    }
    parts = [
        (Part(p.name, p.share, _SMOKE_MINIMUM_S) if smoke else p, functions[p.name]) for p in PARTS
    ]
    run_parts(parts, setting, budget, record)
    result.update(complete=True, seconds=round(budget.used(), 1))
    results.write_json(out, JSON.removesuffix(".json"), result)
    (out / SUMMARY).write_text(format_summary(result))
    archived = bundle(out, KEEP)
    if archived:
        print(f"  archived {len(archived)} files into {out / 'extra.tgz'}")
    print("\n" + (out / SUMMARY).read_text())
    return result
