"""The model beside measurements: where a committed GPU run (benchmarks/results/*.json) measured
the same case, its time is put next to the prediction with the model's error, so the model is
calibrated against the hardware rather than defended."""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

# (static case field, measured provider, static prediction field)
SPIDER_PAIRS = (("spider", "fastpeft", "predicted_fused_us"),
                ("adamw", "adamw", "predicted_adamw_us"))  # fmt: skip


def _measured_rows(results: Path) -> list[tuple[str, dict, dict]]:
    found = []
    for path in sorted(results.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "rows" not in data or data.get("device") in (None, "cpu"):
            continue
        found += [(path.name, data, row) for row in data["rows"] if "median_ms" in row]
    return found


def beside_measurements(cases: list[dict], arch: str, results: Path = RESULTS) -> list[dict]:
    """One row per (static case, measured row of the same case and dtype): predicted and
    measured microseconds and the model's relative error."""
    if arch != "sm_90":
        return []  # the committed GPU runs are Hopper's
    out = []
    for name, data, row in _measured_rows(results):
        for case in cases:
            if case["method"] != "spider" or row.get("suite") != "spider":
                continue
            if row.get("elements") != case.get("elements") or row["dtype"] != case["adapter_dtype"]:
                continue
            for what, provider, field in SPIDER_PAIRS:
                if row["provider"] != provider or field not in case:
                    continue
                measured = row["median_ms"] * 1e3
                out.append({
                    "case": case["case"], "what": what, "dtype": row["dtype"],
                    "measured_us": round(measured, 1), "measured_on": data["device"],
                    "measured_backend": row.get("backend"), "source": name,
                    "model_us": case[field],
                    "model_error": round(case[field] / measured - 1, 3),
                })  # fmt: skip
    return out
