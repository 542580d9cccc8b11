"""The proof suite's verdicts: each target beside its measured figure, "met", "missed" or "not
measured", and, where a kernel target is missed, the kernels the profiler saw in that row."""

from collections.abc import Callable

# (target, the text beside it, which row and figure it is judged on)
LORA_FROZEN, LORA_PEFT = 1.08, 1.35
IA3_FROZEN, ADAPTER_EAGER = 1.03, 2.0
SPIDER_ADAMW = 1.10  # "about one fused AdamW step": within 10%
E2E_SPEEDUP, E2E_MEMORY, E2E_FROZEN = 1.4, 0.75, 1.15


def _rows(parts: dict, name: str) -> list[dict]:
    return parts.get(name, {}).get("rows", [])


def _fast_full(rows: list[dict], pick: Callable[[dict], bool]) -> list[dict]:
    return [
        r
        for r in rows
        if r["provider"] == "fastpeft" and r.get("mode") == "full" and pick(r) and "times_ms" in r
    ]


def _kernels(row: dict) -> str:
    top = row.get("kernels") or []
    return "; ".join(f"{k['kernel']} {k['ms']:.3g} ms ({100 * k['share']:.0f}%)" for k in top[:3])


def _judge(name: str, rows: list[dict], key: str, limit: float, at_most: bool, unit="x") -> dict:
    """Worst row's `key` against `limit` (at most or at least)."""
    target = f"{'<=' if at_most else '>='} {limit:g}{unit}"
    values = [(r[key], r) for r in rows if key in r]
    if not values:
        return {"target": name, "goal": target, "measured": None, "verdict": "not measured"}
    value, worst = (max if at_most else min)(values, key=lambda v: v[0])
    met = value <= limit if at_most else value >= limit
    entry = {"target": name, "goal": target, "measured": round(value, 3), "case": worst["case"]}
    entry["verdict"] = "met" if met else "missed"
    if not met and worst.get("kernels"):
        entry["kernels"] = _kernels(worst)
    return entry


def judge(parts: dict) -> list[dict]:
    """Every target's entry; `parts` maps part name to its recorded entry (with "rows")."""
    layer_rows = _rows(parts, "layers")
    headline = _fast_full(
        layer_rows,
        lambda r: (
            r["kind"] == "lora"
            and r["r"] == 16
            and r["K"] == r["N"]
            and r["weights"] == "float32"
            and r["dropout"] > 0
        ),
    )[:1]
    ia3 = _fast_full(layer_rows, lambda r: r["kind"] == "ia3")
    adapters = _fast_full(layer_rows, lambda r: r["kind"] == "adapter")
    spider = [r for r in _rows(parts, "spider") if r["provider"] == "fastpeft"]
    e2e = [r for r in _rows(parts, "e2e") if r["provider"] == "fastpeft" and "step_ms" in r]
    lora_e2e = [r for r in e2e if r["method"] == "lora"]
    entries = [
        _judge(
            "LoRA r16 4096² fwd+bwd vs frozen linear", headline, "time_vs_base", LORA_FROZEN, True
        ),
        _judge("LoRA r16 4096² fwd+bwd vs PEFT", headline, "speedup_vs_peft", LORA_PEFT, False),
        _judge("IA3 fwd+bwd vs frozen linear (worst case)", ia3, "time_vs_base", IA3_FROZEN, True),
        _judge(
            "adapter fwd+bwd vs eager (worst case)",
            adapters,
            "speedup_vs_eager",
            ADAPTER_EAGER,
            False,
        ),
        _judge("SPIDER step vs one fused AdamW step", spider, "time_vs_adamw", SPIDER_ADAMW, True),
        _judge("e2e LoRA tokens/s vs PEFT", lora_e2e, "speedup_vs_peft", E2E_SPEEDUP, False),
        _judge("e2e LoRA peak memory vs PEFT", lora_e2e, "memory_vs_peft", E2E_MEMORY, True),
    ]
    ran = sorted({r["method"] for r in e2e})
    frozen = _judge(
        "e2e every method vs the frozen step (worst)", e2e, "time_vs_frozen", E2E_FROZEN, True
    )
    missing = [m for m in ("lora", "ia3", "adapter", "prefix") if m not in ran]
    if missing and frozen["verdict"] == "met":
        frozen["verdict"] = "not measured"  # met by the methods that ran; the others unknown
    if missing:
        frozen["note"] = f"not measured: {', '.join(missing)}"
    return entries + [frozen]
