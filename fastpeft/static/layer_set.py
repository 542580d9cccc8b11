"""Paper A's adapter layer set on one Llama-7B decoder layer, from the static cases: the gate/up
pre-adapter pair and the down post-adapter, fwd + bwd, against the frozen layer's linears.

    step_over_frozen = (Σ frozen linears + pair + post) / Σ frozen linears

The frozen linears are q, k, v, o (k/v with GQA), gate, up and down: each case's
`predicted_base_us` (the frozen linear as cuBLAS, fwd + bwd) of the LoRA and IA3 rows at that
shape. The frozen step also runs attention, norms and activations, which this sum leaves out: the
ratio is an upper bound of what the full step would show. A prediction of the model, like the
cases it is made of; rows exist only where every part was modelled (the full run, not --quick).
"""

import re

from . import l2_bound

LIMIT = 1.15  # issue 18: the whole adapter layer set within 15% of the frozen step
# Llama-7B's linears per decoder layer, by the bench's shape labels: (label, count)
LAYER_LINEARS = (("q/o", 2), ("k/v gqa", 2), ("gate/up", 2), ("down", 1))
SINGLE_LINEAR = ("lora", "ia3")  # methods whose cases are one linear (not a shared-input group)
_LABEL = re.compile(r"^\S+ (.+?) M=(\d+)")


def _frozen_linears(cases: list[dict]) -> dict[int, tuple[float, l2_bound.Profile]]:
    """{M: (Σ over the layer's linears of their frozen fwd + bwd µs, their L2 profile)} where
    every shape has one."""
    base: dict[tuple[int, str], tuple[float, l2_bound.Profile]] = {}
    for case in cases:
        match = _LABEL.match(case["case"])
        if match and case["method"] in SINGLE_LINEAR and "predicted_base_us" in case:
            walks = case.get("l2_reference_profiles", {}).get("base", [])
            base[(int(match.group(2)), match.group(1))] = (case["predicted_base_us"], walks)
    sums = {}
    for m in {m for m, _ in base}:
        parts = [(base.get((m, label)), count) for label, count in LAYER_LINEARS]
        if all(part is not None for part, _ in parts):
            us = sum(part[0] * count for part, count in parts)
            sums[m] = (us, [launch for part, count in parts for launch in part[1] * count])
    return sums


def rows(cases: list[dict]) -> list[dict]:
    """One row per (M, H, adapter dtype, dropout) with both the pair and the post-adapter."""
    frozen = _frozen_linears(cases)
    by_key: dict[tuple, dict[str, dict]] = {}
    for case in cases:
        if case["method"] in ("adapter", "adapter_pair") and case["predicted_fused_us"]:
            key = (case["M"], case["H"], case["adapter_dtype"], case["dropout"])
            by_key.setdefault(key, {})[case["method"]] = case
    out = []
    for (m, h, dtype, dropout), found in sorted(by_key.items()):
        if m not in frozen or len(found) != 2:
            continue
        adapters = (
            found["adapter_pair"]["predicted_fused_us"] + found["adapter"]["predicted_fused_us"]
        )
        frozen_us, frozen_walks = frozen[m]
        ratio = (frozen_us + adapters) / frozen_us
        launches = found["adapter_pair"].get("l2_profile", []) + found["adapter"].get(
            "l2_profile", []
        )
        free = l2_bound.fixed((LIMIT - 1) * frozen_us)  # the frozen linears' L2 traffic free
        limits = [(frozen_walks, LIMIT - 1)] if frozen_walks else free
        out.append({
            "case": f"Llama-7B layer M={m}: gate/up pre-adapter pair + down post-adapter H={h}",
            "adapter_dtype": dtype, "dropout": dropout, "M": m, "H": h, "model": True,
            "predicted_frozen_linears_us": round(frozen_us, 2),
            "predicted_adapters_us": round(adapters, 2),
            "predicted_step_over_frozen": round(ratio, 3),
            "target": f"predicted_step_over_frozen <= {LIMIT}",
            "predicted_verdict": "meets" if ratio <= LIMIT else "misses",
            "l2_tbps_needed": l2_bound.needed(launches, limits) if launches else None,
            "l2_tbps_needed_references_free": l2_bound.needed(launches, free) if launches else None,
        })  # fmt: skip
    return out
