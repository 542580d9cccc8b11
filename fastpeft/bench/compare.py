"""What a row's times mean next to its group's: speedups over the named baseline, the floor as a
bound, the noisy flag and the warnings a reader must not miss.

A group is the rows timed together (one layer case and mode, one e2e method, one SPIDER run):
every row in it carries per-repetition times from the same repetitions, and names its
`baseline` provider. A row with `role == "floor"` (the frozen linear or model) bounds every
method of its group from below: it gets no speedup of its own but `speedup_bound_vs_<baseline>`,
the speedup a method would show if it cost nothing beyond the floor.
"""

from collections.abc import Callable, Hashable

from .stats import paired_ratios, spread


def warn(row: dict, message: str) -> None:
    row.setdefault("warnings", []).append(message)


def _put(row: dict, name: str, ratios: list[float]) -> None:
    s = spread(ratios)
    row.update({name: s.median, f"{name}_p20": s.p20, f"{name}_p80": s.p80})


def compare_groups(
    rows: list[dict], group_of: Callable[[dict], Hashable], time_key: str = "median_ms"
) -> None:
    """Add speedups, bounds, time relative to the floor, memory ratios, `noisy` and warnings to
    the timed rows of `rows` (in place); `time_key` names the median time column."""
    groups: dict[Hashable, list[dict]] = {}
    for row in rows:
        groups.setdefault(group_of(row), []).append(row)
    for group in groups.values():
        _compare_group([r for r in group if "times_ms" in r], time_key)


def _compare_group(rows: list[dict], time_key: str) -> None:
    by_provider = {r["provider"]: r for r in rows}
    floor = next((r for r in rows if r.get("role") == "floor"), None)
    for row in rows:
        base = by_provider.get(row["baseline"])
        ratio_spread = None
        if base is not None and base is not row:
            ratios = paired_ratios(base["times_ms"], row["times_ms"])
            name = "speedup_bound" if row is floor else "speedup"
            _put(row, f"{name}_vs_{row['baseline']}", ratios)
            row["speedup_samples"] = ratios
            ratio_spread = spread(ratios)
            if "peak_mib" in row and base.get("peak_mib"):
                row[f"memory_vs_{row['baseline']}"] = row["peak_mib"] / base["peak_mib"]
        if floor is not None and row is not floor:
            _put(row, f"time_vs_{floor['provider']}",
                 paired_ratios(row["times_ms"], floor["times_ms"]))  # fmt: skip
        # Noisy: the row's own times, or its ratio to the baseline, spread by more than
        # stats.NOISY_SPREAD between their 20th and 80th percentiles.
        row["noisy"] = spread(row["times_ms"]).noisy or bool(ratio_spread and ratio_spread.noisy)
    if floor is not None:
        _check_floor(floor, rows, time_key)


def _check_floor(floor: dict, rows: list[dict], time_key: str) -> None:
    """A floor measured slower than a row it bounds is a measurement problem: say so."""
    faster = [r for r in rows if r is not floor and r[time_key] < floor[time_key]]
    for row in faster:
        warn(
            floor,
            f"floor {floor['provider']} measured slower than {row['provider']} "
            f"({floor[time_key]:.4g} ms > {row[time_key]:.4g} ms): its bound is not trustworthy "
            "(timing noise, or the floor is not what it should be)",
        )
    if faster:
        floor["floor_slower_than"] = [r["provider"] for r in faster]


def clamp_percent(row: dict, key: str, limit: float = 100.0) -> None:
    """Percentages of a measured ceiling above `limit` mean the ceiling was under-measured (a
    busy machine while it was measured): clamp to `limit`, keep the raw figure, and say so."""
    value = row.get(key)
    if value is None or value <= limit:
        return
    row[f"{key}_raw"] = value
    row[key] = limit
    row[f"{key}_clamped"] = True
    warn(row, f"{key} {value:.0f} exceeds {limit:.0f}: the measured ceiling is too low; clamped")
