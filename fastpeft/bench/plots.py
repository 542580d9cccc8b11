"""PNG plots of a bench run (needs matplotlib, the `plot` extra): fastpeft's speedup per layer
case, and per e2e method the speed and the peak memory of every provider. Speedups carry their
p20–p80 spread as error bars, the baseline is the labelled 1x line, the floor is drawn as the
bound it is, and each axis says which way is better.
"""

from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


# One colour per provider in every panel (the baselines share one: each method has one).
_COLOURS = {"fastpeft": "tab:blue", "peft": "tab:orange", "eager": "tab:orange",
            "frozen": "tab:gray", "peft-bf16": "tab:purple", "eager-bf16": "tab:purple",
            "peft+compile": "tab:brown", "eager+compile": "tab:brown"}  # fmt: skip


def _legend_below(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)


def _slot(row: dict) -> str:
    return "baseline" if row["provider"] == row["baseline"] else row["provider"]


def _speedup_key(row: dict) -> str:
    return f"speedup_vs_{row['baseline']}"


def _speedups(rows: list[dict]) -> tuple[list[float], list[list[float]]]:
    """Each row's speedup over its baseline and the asymmetric error bars (down to p20, up to
    p80) that matplotlib's `xerr` takes."""
    keys = [_speedup_key(r) for r in rows]
    values = [r[k] for r, k in zip(rows, keys, strict=True)]
    below = [r[k] - r[f"{k}_p20"] for r, k in zip(rows, keys, strict=True)]
    above = [r[f"{k}_p80"] - r[k] for r, k in zip(rows, keys, strict=True)]
    return values, [below, above]


def write_plots(out: Path, name: str, meta: dict, rows: list[dict]) -> list[Path]:
    plt = _pyplot()
    if plt is None:
        return []
    written = []
    device = meta.get("device", "?")
    layers = _layers_plot(plt, rows, device)
    if layers is not None:
        written.append(_save(plt, layers, out / f"{name}_layers_speedup.png"))
    e2e = _e2e_plot(plt, rows, device)
    if e2e is not None:
        written.append(_save(plt, e2e, out / f"{name}_e2e.png"))
    return written


def _layers_plot(plt, rows: list[dict], device: str):
    full = [r for r in rows if r["suite"] == "layers" and r.get("mode") == "full"]
    fast = [r for r in full if r["provider"] == "fastpeft" and _speedup_key(r) in r]
    if not fast:
        return None
    floors = {r["case"]: r for r in full if "speedup_bound_vs_peft" in r}
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(fast) + 3))
    y = range(len(fast))
    values, errors = _speedups(fast)
    ax.barh(y, values, xerr=errors, capsize=2, color="tab:blue",
            label="fastpeft (median, p20-p80 bars)")  # fmt: skip
    bound_y = [i for i, r in enumerate(fast) if r["case"] in floors]
    if bound_y:
        ax.scatter([floors[fast[i]["case"]]["speedup_bound_vs_peft"] for i in bound_y], bound_y,
                   marker="|", s=200, color="tab:red", zorder=3,
                   label="floor bound: frozen linear alone (no method beats it)")  # fmt: skip
    ax.axvline(1.0, color="black", linewidth=0.8, label="PEFT = 1x (eager for adapters)")
    ax.set_yticks(list(y), [r["case"] for r in fast], fontsize=7)
    ax.set_xlabel("speedup over the baseline, forward + backward (higher is better)")
    ax.set_title(f"Layers: fastpeft vs PEFT, {device}", fontsize=9)
    ax.invert_yaxis()
    _legend_below(ax)
    return fig


def _e2e_plot(plt, rows: list[dict], device: str):
    e2e = [r for r in rows if r["suite"] == "e2e" and "step_ms" in r]
    if not e2e:
        return None
    methods = list(dict.fromkeys(r["method"] for r in e2e))
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 0.5 * len(methods) + 3.5))
    faster = [r for r in e2e if _speedup_key(r) in r]
    providers = list(dict.fromkeys(r["provider"] for r in faster))
    height = 0.8 / max(1, len(providers))
    for k, provider in enumerate(providers):
        mine = [r for r in faster if r["provider"] == provider]
        y = [methods.index(r["method"]) + k * height for r in mine]
        values, errors = _speedups(mine)
        colour = _COLOURS.get(provider)
        speed.barh(y, values, height=height, xerr=errors, capsize=2, label=provider, color=colour)
    bounds = [r for r in e2e if any(k.startswith("speedup_bound_vs_") for k in r)]
    if bounds:
        speed.scatter([r[f"speedup_bound_vs_{r['baseline']}"] for r in bounds],
                      [methods.index(r["method"]) + 0.4 - height / 2 for r in bounds],
                      marker="|", s=300, color="tab:red", zorder=3,
                      label="frozen-model bound (no method beats it)")  # fmt: skip
    speed.axvline(1.0, color="black", linewidth=0.8, label="PEFT = 1x (eager for adapter)")
    speed.set_xlabel("training-step speedup over PEFT (higher is better)")
    speed.set_title("speed (median, p20-p80 bars)", fontsize=9)
    memory_rows = [r for r in e2e if "peak_mib" in r]
    mem_providers = list(dict.fromkeys(r["provider"] for r in memory_rows))
    # The baseline ("peft", "eager" for adapters) takes one slot in every method's group.
    slots = list(dict.fromkeys(_slot(r) for r in memory_rows))
    mheight = 0.8 / max(1, len(slots))
    for provider in mem_providers:
        mine = [r for r in memory_rows if r["provider"] == provider]
        y = [methods.index(r["method"]) + slots.index(_slot(r)) * mheight for r in mine]
        peaks = [r["peak_mib"] for r in mine]
        memory.barh(y, peaks, height=mheight, label=provider, color=_COLOURS.get(provider))
    memory.set_xlabel("peak memory of a training step, MiB (lower is better)")
    memory.set_title("memory", fontsize=9)
    if not memory_rows:  # smoke runs on a CPU share one process: no per-provider peak
        memory.text(0.5, 0.5, "not measured in this run", ha="center", transform=memory.transAxes)
    for ax, h in ((speed, height), (memory, mheight)):
        ax.set_yticks([i + 0.4 - h / 2 for i in range(len(methods))], methods)
        ax.invert_yaxis()
        _legend_below(ax)
    fig.suptitle(f"End to end, {device}", fontsize=9)
    return fig


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
