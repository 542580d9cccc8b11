"""The model beside measurements: where a committed GPU run (benchmarks/results/*.json, from
`fastpeft bench` or its proof suite) measured the same case, its time is put next to the
prediction with the model's relative error, so the model is calibrated against the hardware
rather than defended."""

import json
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

# What a measured provider is beside: the case's predictions by name. The spider suite's
# "fastpeft" provider is Spider's step after AdamW's; "spider_adamw" is SpiderAdamW's whole step
# (the static SPIDER cases say which they model in their "step" field).
SPIDER_PAIRS = {
    "Spider after AdamW": {"fastpeft": "predicted_fused_us", "adamw": "predicted_adamw_us"},
    "SpiderAdamW": {"spider_adamw": "predicted_fused_us", "adamw": "predicted_adamw_us"},
}
LAYER_PAIRS = {"fastpeft": "predicted_fused_us", "base": "predicted_base_us",
               "eager": "predicted_eager_us"}  # fmt: skip
# PEFT's provider with the case's adapter dtype: its default keeps fp32 adapters.
PEFT_PROVIDER = {"float32": "peft", "bfloat16": "peft-bf16"}


def _runs(results: Path) -> list[tuple[str, dict, list[dict]]]:
    """(file, run, rows) of every GPU run: a bench JSON's rows, or each part's of a proof."""
    found = []
    for path in sorted(results.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("device") in (None, "cpu") or data.get("smoke"):
            continue
        rows = list(data.get("rows", []))
        for part in (data.get("parts") or {}).values():
            rows += part.get("rows", []) if isinstance(part, dict) else []
        found.append((path.name, data, [r for r in rows if "median_ms" in r]))
    return found


def _run_dtype(data: dict) -> str | None:
    return (data.get("settings") or {}).get("dtype")


def _predictions_for(case: dict, row: dict, data: dict) -> dict[str, str]:
    """{measured provider: prediction field} when `row` measured `case`, else {}."""
    if case["method"] == "spider":
        same = row.get("suite") == "spider" and row.get("elements") == case.get("elements")
        if not same or row.get("dtype") != case["adapter_dtype"]:
            return {}
        return SPIDER_PAIRS.get(case.get("step", "Spider after AdamW"), {})
    if case.get("path", "fused") != "fused" or case.get("allow_tf32"):
        return {}  # the bench measures the default path, with torch's default TF32 setting
    size = case.get("r", case.get("H"))
    same = (
        row.get("suite") == "layers"
        and row.get("kind") == case["method"]
        and row.get("mode") == "full"
        and (row.get("M"), row.get("K"), row.get("N"), row.get("r")) == (
            case.get("M"), case.get("K"), case.get("N"), size or 0)
        and row.get("weights", case["adapter_dtype"]) == case["adapter_dtype"]
        and row.get("dropout", case["dropout"]) == case["dropout"]
        and _run_dtype(data) in (None, "bfloat16")
    )  # fmt: skip
    if not same:
        return {}
    return {**LAYER_PAIRS, PEFT_PROVIDER.get(case["adapter_dtype"], "peft"): "predicted_peft_us"}


def beside_measurements(cases: list[dict], arch: str, results: Path = RESULTS) -> list[dict]:
    """One row per (static case, measured row of the same case): the predicted and measured
    microseconds and the model's relative error."""
    if arch != "sm_90":
        return []  # the committed GPU runs are Hopper's
    out = []
    for name, data, rows in _runs(results):
        for row in rows:
            for case in cases:
                field = _predictions_for(case, row, data).get(row["provider"])
                if field is None or field not in case:
                    continue
                measured = row["median_ms"] * 1e3
                out.append({
                    "case": case["case"], "what": row["provider"],
                    "dtype": case["adapter_dtype"], "dropout": case["dropout"],
                    "measured_us": round(measured, 1), "measured_on": data["device"],
                    "measured_backend": row.get("backend"), "source": name,
                    "model_us": case[field],
                    "model_error": round(case[field] / measured - 1, 3),
                })  # fmt: skip
    return out


def kernels_beside_measurements(
    cases: list[dict], launches: list[dict], arch: str, results: Path = RESULTS
) -> list[dict]:
    """One row per (static case, kernel) that a GPU run profiled: the proof kit's layers part
    keeps torch.profiler's device time per kernel for its fastpeft rows (`kernels`, ms per
    fwd+bwd call). Beside each goes the model's time for that kernel's launches in the case, its
    relative error, and, where the model counts the kernel's L2 traffic, the L2 bandwidth the
    measured time implies (a kernel that runs at the device's L2 ceiling is L2-bound, which the
    model does not yet cost)."""
    if arch != "sm_90":
        return []
    out = []
    for name, data, rows in _runs(results):
        for row in rows:
            if row.get("provider") != "fastpeft" or not row.get("kernels"):
                continue
            for case in cases:
                if _predictions_for(case, row, data).get("fastpeft") != "predicted_fused_us":
                    continue
                out += _kernel_rows(case, launches, row, data["device"], name)
    return out


def _kernel_rows(case: dict, launches: list[dict], row: dict, device: str, source: str):
    label = f"{case['case']} {case['adapter_dtype']} p={case['dropout']:g}"
    model_us: dict[str, float] = defaultdict(float)
    l2: dict[str, float] = defaultdict(float)
    for launch in launches:
        if launch["method"] == case["method"] and launch["case"] == label:
            model_us[launch["kernel"]] += launch.get("predicted_us") or 0.0
            l2[launch["kernel"]] += launch.get("l2_bytes") or 0
    found = []
    for measured in row["kernels"]:
        kernel = measured["kernel"]
        if kernel not in model_us or not measured.get("ms"):
            continue
        us = measured["ms"] * 1e3
        entry = {"case": case["case"], "kernel": kernel, "dtype": case["adapter_dtype"],
                 "dropout": case["dropout"], "measured_us": round(us, 1), "measured_on": device,
                 "source": source, "model_us": round(model_us[kernel], 1),
                 "model_error": round(model_us[kernel] / us - 1, 3)}  # fmt: skip
        if l2[kernel]:
            entry["l2_tbps_at_measured"] = round(l2[kernel] / us / 1e6, 2)
        found.append(entry)
    return found
