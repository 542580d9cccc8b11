"""Benchmark output: the terminal tables, one JSON per run and one CSV per suite, each row with
its provenance (git sha, versions, device, settings), so a CSV line read alone still says what
produced it. Units are in the column names (`_ms`, `_mib`, `tflops`, `gbps`); memory is MiB.
"""

import csv
import json
from collections.abc import Callable
from pathlib import Path

_COLUMNS = {
    "layers": ("case", "mode", "provider", "median_ms", "p20_ms", "p80_ms", "tflops", "gbps",
               "pct_of_peak", "speedup_vs_peft", "speedup_vs_eager", "time_vs_base"),
    "e2e": ("case", "provider", "step_ms", "step_p20_ms", "step_p80_ms", "tokens_per_s",
            "peak_mib", "speedup_vs_peft", "speedup_vs_eager", "memory_vs_peft",
            "memory_vs_eager", "time_vs_frozen"),
    "spider": ("provider", "dtype", "elements", "median_ms", "p20_ms", "p80_ms",
               "state_bytes_per_element", "bytes_per_element", "speedup_vs_reference",
               "time_vs_adamw", "time_vs_adamw_p20", "time_vs_adamw_p80", "fraction_of_copy_bw"),
}  # fmt: skip


def _number(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def _with_spread(row: dict, key: str) -> str:
    return f"{row[key]:.3g} [{row[f'{key}_p20']:.3g}-{row[f'{key}_p80']:.3g}]"


def _cell(row: dict, column: str) -> str:
    if column.startswith("speedup_vs_"):
        baseline = column.removeprefix("speedup_vs_")
        bound = f"speedup_bound_vs_{baseline}"
        if bound in row:
            return f"<={row[bound]:.3g} floor bound"
        if row.get("provider") == baseline and row.get("baseline") == baseline:
            return "baseline" if "error" not in row else ""
    if f"{column}_p20" in row:
        return _with_spread(row, column)
    return _number(row.get(column))


def flags(row: dict) -> str:
    """Short markers for the table; the warnings themselves are listed under it."""
    marks = []
    if row.get("noisy"):
        marks.append("noisy")
    if row.get("floor_slower_than"):
        marks.append("FLOOR>" + ",".join(row["floor_slower_than"]))
    marks += ["clamped" for key in row if key.endswith("_clamped")]
    return " ".join(marks)


def format_table(rows: list[dict], suite: str) -> str:
    rows = [r for r in rows if r["suite"] == suite]
    if not rows:
        return "(no rows)"
    shown = [c for c in _COLUMNS[suite] if any(_cell(r, c) for r in rows)]
    columns: list[tuple[str, Callable[[dict], str]]] = [
        (c, lambda r, c=c: _cell(r, c)) for c in shown
    ]
    columns.append(("flags", flags))
    if any("error" in r for r in rows):
        columns.append(("error", lambda r: r.get("error", "")))
    body = [[fn(r) for _, fn in columns] for r in rows]
    widths = [max(len(name), *(len(line[i]) for line in body)) for i, (name, _) in
              enumerate(columns)]  # fmt: skip
    lines = ["  ".join(name.ljust(w) for (name, _), w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in body]
    for r in rows:
        where = " / ".join(str(r[k]) for k in ("case", "mode", "provider") if k in r)
        lines += [f"! {where}: {message}" for message in r.get("warnings", [])]
    return "\n".join(lines)


def all_warnings(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        where = " / ".join(str(r[k]) for k in ("suite", "case", "mode", "provider") if k in r)
        out += [f"{where}: {message}" for message in r.get("warnings", [])]
    return out


def write_json(out: Path, name: str, result: dict) -> Path:
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def _csv_value(value):
    return "; ".join(map(str, value)) if isinstance(value, list) else value


def write_csvs(out: Path, name: str, meta: dict, rows: list[dict]) -> list[Path]:
    """One CSV per suite (`<name>_<suite>.csv`): that suite's columns only, each line with the
    run's provenance; per-repetition samples stay in the JSON."""
    flat_meta = {k: v for k, v in meta.items() if not isinstance(v, dict | list)}
    flat_meta.update(meta.get("versions", {}))
    flat_meta.update({k: v for k, v in meta.get("settings", {}).items() if k not in flat_meta})
    written = []
    for suite in dict.fromkeys(r["suite"] for r in rows):
        suite_rows = [r for r in rows if r["suite"] == suite]
        keys: list[str] = []
        for row in suite_rows:
            keys += [k for k in row if k not in keys and k not in ("times_ms", "speedup_samples")]
        fields = keys + [k for k in flat_meta if k not in keys]
        path = out / f"{name}_{suite}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            for row in suite_rows:
                writer.writerow({**flat_meta, **{k: _csv_value(v) for k, v in row.items()}})
        written.append(path)
    return written
