"""Benchmark output: the terminal table, JSON and CSV rows with their provenance, PNG plots.

Every row carries the git sha, package versions, device name and the run's settings, so a CSV
line read alone still says what produced it.
"""

import csv
import json
from pathlib import Path

_TABLE_COLUMNS = {
    "layers": ("case", "mode", "provider", "median_ms", "p20_ms", "p80_ms", "tflops", "gbps",
               "pct_of_peak", "speedup_vs_baseline"),
    "e2e": ("case", "provider", "step_ms", "tokens_per_s", "peak_mb", "fraction_of_frozen_step",
            "speedup_vs_peft", "memory_vs_peft"),
    "spider": ("provider", "dtype", "elements", "median_ms", "p20_ms", "p80_ms",
               "state_bytes_per_element", "speedup_vs_reference", "ratio_to_adamw"),
}  # fmt: skip


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def format_table(rows: list[dict], suite: str) -> str:
    columns = [c for c in _TABLE_COLUMNS[suite] if any(c in r for r in rows)]
    if any("error" in r for r in rows):
        columns.append("error")
    body = [[_cell(r.get(c)) for c in columns] for r in rows if r["suite"] == suite]
    widths = [max(len(c), *(len(line[i]) for line in body)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in body]
    return "\n".join(lines)


def write_json_csv(out: Path, name: str, meta: dict, rows: list[dict]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / f"{name}.json", out / f"{name}.csv"
    json_path.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    flat_meta = {k: v for k, v in meta.items() if not isinstance(v, dict)}
    flat_meta.update(meta.get("versions", {}))
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    fields = keys + [k for k in flat_meta if k not in keys]
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({**flat_meta, **row})
    return [json_path, csv_path]


def write_plots(out: Path, name: str, meta: dict, rows: list[dict]) -> list[Path]:
    """PNG plots (needs matplotlib): fastpeft's speedup per layer case, memory per e2e method."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    device = meta.get("device", "?")
    speedups = [r for r in rows if r.get("provider") == "fastpeft" and "speedup_vs_baseline" in r]
    full = [r for r in speedups if r.get("mode") == "full"]
    if full:
        fig, ax = plt.subplots(figsize=(9, 0.32 * len(full) + 1.5))
        ax.barh([r["case"] for r in full], [r["speedup_vs_baseline"] for r in full])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("fastpeft speedup over PEFT / eager (forward + backward)")
        ax.set_title(f"Layers, {device}", fontsize=9)
        ax.invert_yaxis()
        written.append(_save(fig, out / f"{name}_layers_speedup.png"))
    e2e = [r for r in rows if r["suite"] == "e2e" and "peak_mb" in r]
    if e2e:
        labels = [f"{r['method']} / {r['provider']}" for r in e2e]
        fig, ax = plt.subplots(figsize=(9, 0.32 * len(e2e) + 1.5))
        ax.barh(labels, [r["peak_mb"] / 1024 for r in e2e])
        ax.set_xlabel("peak memory of a training step (GiB)")
        ax.set_title(f"End to end, {device}", fontsize=9)
        ax.invert_yaxis()
        written.append(_save(fig, out / f"{name}_e2e_memory.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
