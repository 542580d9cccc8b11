"""How fast the L2 must be for a case's target to hold, while the model has no L2 ceiling.

A launch's predicted time takes its L2 traffic (`l2_bytes`, costing.py) as free. With an L2 read
bandwidth B it would take at least max(predicted, l2_bytes / B). A case's launches, as a profile
of (predicted µs, L2 bytes) pairs, then take time_at(profile, B) in all, and `needed` finds the
least B at which that fits a time budget (the target's): the bound a GPU's measured L2 ceiling
(the proof kit's `l2_read_gbps`) is checked against. Conservative for the adapters' targets: the
eager reference's own L2 traffic stays free.
"""

Profile = list[tuple[float, float]]  # (predicted µs, bytes through L2) per launch


def profile(rows: list[dict]) -> Profile:
    """A case's launch rows as (predicted µs, L2 bytes): a launch without modelled re-reads moves
    its DRAM bytes through L2 once."""
    return [(r["predicted_us"] or 0.0, r.get("l2_bytes") or r["dram_bytes"]) for r in rows]


def time_at(launches: Profile, tbps: float) -> float:
    """µs of the launches with an L2 of `tbps` TB/s: each at least its L2 bytes' time."""
    return sum(max(us, l2 / (tbps * 1e6)) for us, l2 in launches)


def needed(launches: Profile, budget_us: float) -> float | None:
    """The least L2 bandwidth (TB/s, to 0.01) at which the launches fit `budget_us`; None where
    they do not fit it even with L2 free."""
    if sum(us for us, _ in launches) > budget_us:
        return None
    low, high = 0.01, 1000.0
    if time_at(launches, low) <= budget_us:
        return low
    while high - low > 0.005:  # time_at falls as the bandwidth rises: bisect
        mid = (low + high) / 2
        low, high = (low, mid) if time_at(launches, mid) <= budget_us else (mid, high)
    return round(high, 2)
