"""The three suites of `fastpeft bench` at a level: each `run_*` measures and returns raw rows
(calling `checkpoint` with the rows so far after every case or method, so a partial file can be
written), each `finish_*` adds what the rows mean (speedups, bounds, flags) in place.
"""

import sys
from collections.abc import Callable

import torch

from . import e2e, layers, plan
from .compare import clamp_percent, compare_groups
from .spider_step import bench_spider_step

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
Checkpoint = Callable[[list[dict]], None] | None


def _progress(total: int, what: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with transformers; degrade to no bar
        return None
    return tqdm(total=total, desc=what, unit="case", file=sys.stderr, leave=False)


def run_layers(device, dtype, level, compile_, checkpoint: Checkpoint = None) -> list[dict]:
    reps = plan.layer_settings(device, level)[3]
    cases = plan.layer_cases(device, level)
    bar = _progress(len(cases), "layers")
    rows = []
    for case in cases:
        rows += layers.bench_case(case, _DTYPES[dtype], device, compile_, reps)
        bar and bar.update(1)
        checkpoint and checkpoint(rows)
    bar and bar.close()
    return rows


def finish_layers(rows: list[dict], peaks: dict, dtype: str) -> None:
    """TFLOP/s, GB/s and the percentage of the measured ceiling (clamped at 100), speedups."""
    elem = torch.empty((), dtype=_DTYPES[dtype]).element_size()
    for row in rows:
        if "median_ms" not in row:
            continue
        # The floor is the frozen linear alone: none of the adapter's work is its to count.
        r = 0 if row.get("role") == "floor" else row["r"]
        case = layers.LayerCase(row["kind"], row["shape"], row["M"], row["K"], row["N"], r)
        flops, moved = layers.flops_and_bytes(case, row["mode"], elem)
        seconds = row["median_ms"] * 1e-3
        row["tflops"] = flops / seconds / 1e12
        row["gbps"] = moved / seconds / 1e9
        row["pct_of_peak"] = 100 * max(
            row["tflops"] / peaks["matmul_tflops"], row["gbps"] / peaks["copy_gbps"]
        )
        clamp_percent(row, "pct_of_peak")
    compare_groups(rows, lambda r: (r["case"], r["mode"]))


def run_spider(device, dtype, level, compile_, checkpoint: Checkpoint = None) -> list[dict]:
    shapes, reference, reps = plan.spider_settings(device, level)
    rows = bench_spider_step(
        shapes, _DTYPES[dtype], device, reference_shapes=reference, steps=reps, warmup=1
    )
    for row in rows:
        row.update(suite="spider", case=f"spider {row['elements']:,} elements")
        row["baseline"] = "reference"
    return rows


def finish_spider(rows: list[dict]) -> None:
    for row in rows:
        clamp_percent(row, "fraction_of_copy_bw", 1.0)
    compare_groups(rows, lambda r: (r["case"], r["dtype"]))


def run_e2e(device, dtype, level, compile_, checkpoint: Checkpoint = None) -> list[dict]:
    settings = e2e.settings(device, dtype, level)
    methods = ("lora",) if level == "smoke" else e2e.METHODS
    providers = e2e.default_providers(device, dtype, compile_)
    bar = _progress(len(methods), "e2e")
    rows = e2e.run(settings, methods, providers, progress=bar, checkpoint=checkpoint)
    bar and bar.close()
    return rows


def finish_e2e(rows: list[dict]) -> None:
    compare_groups(rows, lambda r: r["case"], time_key="step_ms")
