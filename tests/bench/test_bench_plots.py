"""The plots say what they show: speed and memory for e2e, error bars, a labelled 1x line, which
way is better, one unit per quantity."""

import pytest

from fastpeft.bench import compare, plots, stats

plt = pytest.importorskip("matplotlib.pyplot")


def _e2e_rows():
    rows = []
    for method in ("lora", "ia3"):
        for provider, times, peak in (
            ("frozen", [1.0, 1.1, 1.0], 400.0),
            ("peft", [2.0, 2.2, 2.1], 600.0),
            ("fastpeft", [1.5, 1.6, 1.5], 500.0),
        ):
            s = stats.spread(times)
            row = {"suite": "e2e", "case": f"small llava {method}", "method": method}
            row.update(provider=provider, baseline="peft", times_ms=times, step_ms=s.median)
            row["peak_mib"] = peak
            if provider == "frozen":
                row["role"] = "floor"
            rows.append(row)
    compare.compare_groups(rows, lambda r: r["case"], time_key="step_ms")
    return rows


def _labels(ax):
    return ax.get_legend_handles_labels()[1]


def test_e2e_plot_shows_speed_and_memory_with_legend_error_bars_and_a_labelled_1x():
    fig = plots._e2e_plot(plt, _e2e_rows(), "test cpu")
    speed, memory = fig.axes
    assert "higher is better" in speed.get_xlabel() and "PEFT = 1x" in " ".join(_labels(speed))
    assert any("bound" in label for label in _labels(speed))
    assert speed.containers and any(c.has_xerr for c in speed.containers if hasattr(c, "has_xerr"))
    assert "MiB" in memory.get_xlabel() and "lower is better" in memory.get_xlabel()
    assert "GiB" not in memory.get_xlabel()
    assert set(_labels(memory)) == {"frozen", "peft", "fastpeft"}
    ticks = [t.get_text() for t in speed.get_yticklabels()]
    assert ticks == ["lora", "ia3"] and not [t for t in ticks if "/" in t]
    plt.close(fig)


def test_layers_plot_has_error_bars_direction_and_a_labelled_1x_line():
    rows = []
    for provider, times, role in (("base", [1.0, 1.0], "floor"), ("peft", [3.0, 3.1], None),
                                  ("fastpeft", [2.0, 2.2], None)):  # fmt: skip
        row = {"suite": "layers", "case": "lora q/o", "mode": "full", "provider": provider}
        row.update(baseline="peft", times_ms=times, median_ms=stats.spread(times).median)
        if role:
            row["role"] = role
        rows.append(row)
    compare.compare_groups(rows, lambda r: (r["case"], r["mode"]))
    fig = plots._layers_plot(plt, rows, "test cpu")
    (ax,) = fig.axes
    assert "higher is better" in ax.get_xlabel()
    assert "PEFT = 1x (eager for adapters)" in _labels(ax)
    assert any("floor bound" in label for label in _labels(ax))
    assert any(getattr(c, "has_xerr", False) for c in ax.containers)
    plt.close(fig)
