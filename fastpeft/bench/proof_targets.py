"""The proof suite's verdicts: each target beside its measured figure, "met", "missed" or "not
measured", and, where a kernel target is missed, the kernels the profiler saw in that row.

Each method's targets live in its case module (fastpeft/bench/cases/, `proof_targets`), judged
here in registry order; the e2e targets, on the e2e suite's own methods, follow them.
"""

from collections.abc import Callable

from . import cases
from .e2e import METHODS as E2E_METHODS

E2E_SPEEDUP, E2E_MEMORY, E2E_FROZEN = 1.4, 0.75, 1.15


def rows_of(parts: dict, name: str) -> list[dict]:
    return parts.get(name, {}).get("rows", [])


def fastpeft_full_rows(parts: dict, kind: str, pick: Callable[[dict], bool] = lambda r: True):
    """The timed fastpeft rows of the layers part's `kind` cases in mode "full" that `pick`
    keeps."""
    return [
        r
        for r in rows_of(parts, "layers")
        if r["provider"] == "fastpeft"
        and r.get("mode") == "full"
        and r["kind"] == kind
        and pick(r)
        and "times_ms" in r
    ]


def _kernels(row: dict) -> str:
    top = row.get("kernels") or []
    return "; ".join(f"{k['kernel']} {k['ms']:.3g} ms ({100 * k['share']:.0f}%)" for k in top[:3])


def judge_rows(name: str, rows: list[dict], key: str, limit: float, at_most: bool, unit="x"):
    """Worst row's `key` against `limit` (at most or at least)."""
    target = f"{'<=' if at_most else '>='} {limit:g}{unit}"
    values = [(r[key], r) for r in rows if key in r]
    if not values:
        return {"target": name, "goal": target, "measured": None, "verdict": "not measured"}
    value, worst = (max if at_most else min)(values, key=lambda v: v[0])
    met = value <= limit if at_most else value >= limit
    entry = {"target": name, "goal": target, "measured": round(value, 3), "case": worst["case"]}
    entry["verdict"] = "met" if met else "missed"
    if not met and worst.get("kernels"):
        entry["kernels"] = _kernels(worst)
    return entry


def judge(parts: dict) -> list[dict]:
    """Every target's entry; `parts` maps part name to its recorded entry (with "rows")."""
    entries = [entry for module in cases.modules() for entry in module.proof_targets(parts)]
    return entries + _e2e(parts)


def _e2e(parts: dict) -> list[dict]:
    e2e = [r for r in rows_of(parts, "e2e") if r["provider"] == "fastpeft" and "step_ms" in r]
    lora_e2e = [r for r in e2e if r["method"] == "lora"]
    entries = [
        judge_rows("e2e LoRA tokens/s vs PEFT", lora_e2e, "speedup_vs_peft", E2E_SPEEDUP, False),
        judge_rows("e2e LoRA peak memory vs PEFT", lora_e2e, "memory_vs_peft", E2E_MEMORY, True),
    ]
    ran = sorted({r["method"] for r in e2e})
    frozen = judge_rows(
        "e2e every method vs the frozen step (worst)", e2e, "time_vs_frozen", E2E_FROZEN, True
    )
    missing = [m for m in E2E_METHODS if m not in ran]
    if missing and frozen["verdict"] == "met":
        frozen["verdict"] = "not measured"  # met by the methods that ran; the others unknown
    if missing:
        frozen["note"] = f"not measured: {', '.join(missing)}"
    return entries + [frozen]
