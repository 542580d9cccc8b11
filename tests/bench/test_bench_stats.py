"""The statistics behind every reported figure: paired ratios, spreads, the noisy flag, floors as
bounds (with a warning when a floor is slower than what it bounds), clamped percentages of the
measured ceiling, and the geometric-mean summary."""

import pytest

from fastpeft.bench import compare, results, stats, summary


def test_quantile_interpolates_like_numpy():
    assert stats.quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.2) == pytest.approx(1.8)
    assert stats.quantile([5.0, 1.0, 3.0], 0.5) == 3.0
    s = stats.spread([1.0, 1.0, 1.0, 10.0, 1.0])
    assert (s.median, s.p20) == (1.0, 1.0) and s.p80 == pytest.approx(2.8)


def test_noisy_threshold_is_p80_over_p20():
    assert not stats.spread([1.0, 1.1, 1.2, 1.2]).noisy
    assert stats.spread([1.0, 1.0, 2.0, 2.0]).noisy
    assert stats.NOISY_SPREAD == 1.25


def test_speedup_is_the_median_of_paired_ratios_not_a_ratio_of_medians():
    # The machine slows down 4x halfway through; each pair still shows the true 2x.
    peft = [10.0, 10.0, 10.0, 40.0, 40.0, 40.0]
    fast = [5.0, 5.0, 5.0, 20.0, 20.0, 20.0]
    rows = [_row("peft", peft), _row("fastpeft", fast)]
    compare.compare_groups(rows, lambda r: r["case"])
    fast_row = rows[1]
    assert fast_row["speedup_vs_peft"] == 2.0
    assert fast_row["speedup_vs_peft_p20"] == fast_row["speedup_vs_peft_p80"] == 2.0
    assert fast_row["noisy"]  # its times spread 4x: the ms figures are not to be trusted
    assert fast_row["speedup_samples"] == [2.0] * 6


def _row(provider, times, **extra):
    s = stats.spread(times)
    row = {"suite": "layers", "case": "c", "mode": "full", "provider": provider}
    row.update(baseline="peft", times_ms=times, median_ms=s.median, **extra)
    row.update(p20_ms=s.p20, p80_ms=s.p80)
    return row


def test_floor_gets_a_bound_and_a_warning_when_it_is_slower_than_what_it_bounds():
    rows = [
        _row("base", [3.0, 3.0, 3.1], role="floor"),
        _row("peft", [4.0, 4.0, 4.0]),
        _row("fastpeft", [2.0, 2.1, 2.0]),
    ]
    compare.compare_groups(rows, lambda r: r["case"])
    floor = rows[0]
    assert not [k for k in floor if k.startswith("speedup_vs_")]
    assert floor["speedup_bound_vs_peft"] == pytest.approx(4.0 / 3.0)
    assert floor["floor_slower_than"] == ["fastpeft"]
    assert "floor base measured slower than fastpeft" in floor["warnings"][0]
    assert rows[2]["time_vs_base"] == pytest.approx(2.0 / 3.0)
    table = results.format_table(rows, "layers")
    assert "FLOOR>fastpeft" in table and "! c / full / base: floor base measured slower" in table
    assert "<=1.33 floor bound" in table and "baseline" in table
    assert results.all_warnings(rows) == [f"layers / c / full / base: {floor['warnings'][0]}"]


def test_a_floor_below_every_method_has_no_warning():
    rows = [_row("base", [1.0, 1.0], role="floor"), _row("peft", [2.0, 2.0])]
    compare.compare_groups(rows, lambda r: r["case"])
    assert "warnings" not in rows[0] and "floor_slower_than" not in rows[0]


def test_percent_of_peak_above_100_is_clamped_and_flagged():
    row = {"pct_of_peak": 539.0}
    compare.clamp_percent(row, "pct_of_peak")
    assert row["pct_of_peak"] == 100.0 and row["pct_of_peak_raw"] == 539.0
    assert row["pct_of_peak_clamped"] and "539 exceeds 100" in row["warnings"][0]
    assert results.flags(row) == "clamped"
    fine = {"pct_of_peak": 42.0}
    compare.clamp_percent(fine, "pct_of_peak")
    assert fine == {"pct_of_peak": 42.0}


def test_summary_is_a_geometric_mean_over_cases_with_a_spread_over_repetitions():
    rows = []
    for case, ratio in (("a", 2.0), ("b", 0.5)):
        rows += [
            {**_row("peft", [4.0, 4.0, 4.0]), "case": case, "kind": "lora"},
            {**_row("fastpeft", [4.0 / ratio] * 3), "case": case, "kind": "lora"},
        ]
    compare.compare_groups(rows, lambda r: r["case"])
    (entry,) = summary.summarize(rows)
    assert (entry["method"], entry["provider"], entry["cases"]) == ("lora", "fastpeft", 2)
    assert entry["speedup_vs_peft"] == pytest.approx(1.0)  # sqrt(2 * 0.5)
    assert entry["speedup_vs_peft_p20"] == pytest.approx(1.0) and not entry["noisy"]
    text = summary.format_summary([entry])
    assert "layers lora  fastpeft  1.00x vs peft [1.00-1.00]  2 cases" in text


def test_geomean_spread_uses_per_repetition_means():
    s = stats.geomean_spread([[1.0, 4.0, 1.0], [1.0, 1.0, 4.0]])
    assert s.median == pytest.approx(2.0) and s.p20 == pytest.approx(1.4, rel=0.05)
