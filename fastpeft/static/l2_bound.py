"""How fast the L2 must be for a case's target to hold, while the model has no L2 ceiling.

A launch's predicted time takes its L2 traffic (`l2_bytes`, costing.py) as free. With an L2 read
bandwidth B it would take at least max(predicted, l2_bytes / B). A case's launches, as a profile
of (predicted µs, L2 bytes) pairs, then take time_at(profile, B) in all. A target is a ratio of
that time to a reference's (cuBLAS and PyTorch's kernels, sequences.py, whose GEMMs re-read their
operands too: gemm_rereads), so it bounds the fused time by a share of the reference's time at
the same B; `needed` finds the least B at which every bound holds: the figure a GPU's measured L2
ceiling (the proof kit's `l2_read_gbps`) is checked against.
"""

import math

import torch

from . import sequences

Profile = list[tuple[float, float]]  # (predicted µs, bytes through L2) per launch
Bounds = list[tuple[Profile, float]]  # (a reference's profile, the share of its time allowed)

# A target's field -> the reference its ratio compares the fused time with (fastpeft/static/
# suite.py's TARGETS and the methods' own `targets`): a "max" target bounds the fused time by
# limit x the reference's, a "min" one by the reference's / limit.
REFERENCE_OF_TARGET = {
    "predicted_fused_over_base": "base",
    "predicted_speedup_vs_eager": "eager",
    "predicted_peft_over_fused": "peft",
    "predicted_over_adamw": "adamw",
}


def profile(rows: list[dict]) -> Profile:
    """A case's launch rows as (predicted µs, L2 bytes): a launch without modelled re-reads moves
    its DRAM bytes through L2 once."""
    return [(r["predicted_us"] or 0.0, r.get("l2_bytes") or r["dram_bytes"]) for r in rows]


def op_profile(arch, ops) -> Profile:
    """A reference's (or an untraced part's) kernels (sequences.Op) as a profile."""
    return [(round(op.predicted_us(arch), 3), op.l2) for op in ops]


def without_l2(references: dict[str, Profile]) -> dict[str, Profile]:
    """The references with their L2 traffic free (their predicted times only): the bound that
    holds however cuBLAS walks its GEMMs (multicast or not)."""
    return {name: [(us, 0.0) for us, _ in walks] for name, walks in references.items()}


def fixed(budget_us: float) -> Bounds:
    """A budget that does not depend on the L2 (a reference without L2 traffic)."""
    return [([(budget_us, 0.0)], 1.0)]


def bounds(targets, references: dict[str, Profile]) -> Bounds:
    """The bounds `targets` ((field, limit, "max"/"min") each) put on the fused time, for those
    whose reference has a profile here."""
    found = []
    for what, limit, kind in targets:
        reference = references.get(REFERENCE_OF_TARGET.get(what, ""))
        if reference is not None:
            found.append((reference, limit if kind == "max" else 1.0 / limit))
    return found


def time_at(launches: Profile, tbps: float) -> float:
    """µs of the launches with an L2 of `tbps` TB/s: each at least its L2 bytes' time."""
    return sum(max(us, l2 / (tbps * 1e6)) for us, l2 in launches)


def fits(launches: Profile, limits: Bounds, tbps: float) -> bool:
    """Whether the launches take at most every bound's share of its reference, at `tbps`."""
    took = time_at(launches, tbps)
    return all(took <= share * time_at(reference, tbps) for reference, share in limits)


def needed(launches: Profile, limits: Bounds) -> float | None:
    """The least L2 bandwidth (TB/s, to 0.01) from which on the launches fit `limits` at every
    faster L2; None where they do not fit even with L2 free. (A reference that moves more
    through L2 than the launches may let them fit again on a very slow L2 too: that region is
    not the answer.) Steps down a geometric grid from 1000 TB/s to the first bandwidth that does
    not fit, then bisects the step above it."""
    if not limits or not fits(launches, limits, math.inf):
        return None
    step, high = 1.25, 1000.0
    while high / step >= 0.01 and fits(launches, limits, high / step):
        high /= step
    low = high / step
    if low < 0.01:
        return 0.01
    while high - low > 0.005:
        mid = (low + high) / 2
        low, high = (low, mid) if fits(launches, limits, mid) else (mid, high)
    return math.ceil(high * 100) / 100  # up: the bound must still fit


def implied_by_matmul(arch) -> float | None:
    """The L2 bandwidth (TB/s) the measured tc16 ceiling's GEMM ran at, had cuBLAS walked it as
    the model assumes (sequences.gemm_rereads): its bytes through L2 over its measured time (2 M
    N K FLOPs at the ceiling). A measured L2 read bandwidth below this says cuBLAS moved less
    (tiles multicast within clusters), so the references' modelled walks overstate theirs. None
    where the ceiling was not measured on a known GEMM."""
    ceiling = arch.ceilings.get("tc16")
    if ceiling is None or ceiling.measured_shape is None or ceiling.measured_k is None:
        return None
    (m, n), k = ceiling.measured_shape, ceiling.measured_k
    walk = sequences.gemm("measured matmul", m, n, k, torch.bfloat16)
    seconds = walk.flops / (ceiling.value * 1e12)
    return round(walk.l2 / seconds / 1e12, 2)
