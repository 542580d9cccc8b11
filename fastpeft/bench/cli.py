"""`fastpeft bench`: run the suites on this machine, print the tables, write JSON, CSV and plots.

Levels: "full" (the real shapes: LLaVA-1.5-7B and M=8192 layers on a GPU), "quick" (minutes on a
2-core CPU), "smoke" (seconds; what CI runs to keep the command working).
"""

import sys
import time
from pathlib import Path

import torch

from . import e2e, environment, layers, results
from .spider_step import bench_spider_step, llama_shapes
from .timing import measured_peaks

SUITES = ("layers", "e2e", "spider")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _progress(total: int, what: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with transformers; degrade to no bar
        return None
    return tqdm(total=total, desc=what, unit="case", file=sys.stderr, leave=False)


def _layer_settings(device: torch.device, level: str) -> tuple[int, int, tuple, int]:
    """(dimension divisor, M, LoRA ranks, CPU repetitions)."""
    if device.type == "cuda":
        return (1, 8192, layers.LORA_RANKS, 0) if level == "full" else (1, 4096, (16, 128), 0)
    return {
        "full": (4, 1024, layers.LORA_RANKS, 20),
        "quick": (8, 512, (16, 128), 10),
        "smoke": (32, 64, (16,), 3),
    }[level]


def run_layers(device, dtype, level, compile_) -> list[dict]:
    scale, M, ranks, reps = _layer_settings(device, level)
    cases = layers.layer_cases(scale, M, ranks)
    if level == "smoke":  # one case per kind
        cases = [next(c for c in cases if c.kind == kind) for kind in ("lora", "ia3", "adapter")]
    bar = _progress(len(cases), "layers")
    rows = []
    for case in cases:
        rows += layers.bench_case(case, _DTYPES[dtype], device, compile_, reps)
        bar and bar.update(1)
    bar and bar.close()
    return rows


def _derive_layer_metrics(rows: list[dict], peaks: dict, dtype: str) -> None:
    elem = torch.empty((), dtype=_DTYPES[dtype]).element_size()
    by_key = {(r["case"], r["mode"], r["provider"]): r for r in rows}
    for row in rows:
        if "median_ms" not in row:
            continue
        case = layers.LayerCase(row["kind"], row["shape"], row["M"], row["K"], row["N"], row["r"])
        flops, moved = layers.flops_and_bytes(case, row["mode"], elem)
        seconds = row["median_ms"] * 1e-3
        row["tflops"] = flops / seconds / 1e12
        row["gbps"] = moved / seconds / 1e9
        row["pct_of_peak"] = 100 * max(
            row["tflops"] / peaks["matmul_tflops"], row["gbps"] / peaks["copy_gbps"]
        )
        baseline = "eager" if row["kind"] == "adapter" else "peft"
        ref = by_key.get((row["case"], row["mode"], baseline))
        if ref and "median_ms" in ref and row["provider"] != baseline:
            row["speedup_vs_baseline"] = ref["median_ms"] / row["median_ms"]


def run_spider(device, dtype, level) -> list[dict]:
    if device.type == "cuda":
        shapes = llama_shapes(8 if level == "full" else 2)
        reference = llama_shapes(1)
    else:
        hidden = {"full": 1024, "quick": 512, "smoke": 128}[level]
        shapes = llama_shapes(2, hidden, int(hidden * 2.6875))
        reference = None
    steps = 3 if level == "smoke" else 10
    rows = bench_spider_step(
        shapes, _DTYPES[dtype], device, reference_shapes=reference, steps=steps, warmup=1
    )
    for row in rows:
        row.update(suite="spider", case=f"spider {row['elements']:,} elements")
    return rows


def run_e2e(device, dtype, level, compile_) -> list[dict]:
    settings = e2e.settings(device, dtype, level)
    methods = ("lora",) if level == "smoke" else e2e.METHODS
    providers = e2e.default_providers(device, dtype, compile_)
    bar = _progress(1 + len(methods), "e2e")
    rows = e2e.run(settings, methods, providers, progress=bar)
    bar and bar.close()
    return rows


def run_bench(suite: str, level: str, out: Path, dtype: str | None, device: str | None,
              compile_: bool | None) -> dict:  # fmt: skip
    """Run `suite` ("layers", "e2e", "spider", "all") at `level`; returns the written result."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or ("bfloat16" if dev.type == "cuda" else "float32")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {dtype!r}")
    compile_ = dev.type == "cuda" if compile_ is None else compile_
    suites = SUITES if suite == "all" else (suite,)
    started = time.time()
    peaks = measured_peaks(dev, quick=level != "full")
    meta = {
        "git_sha": environment.git_sha(),
        "device": environment.device_name(dev),
        "versions": environment.versions(),
        "settings": {"suite": suite, "level": level, "dtype": dtype, "compile": compile_},
        "peaks": peaks,
    }
    rows: list[dict] = []
    if "layers" in suites:
        layer_rows = run_layers(dev, dtype, level, compile_)
        _derive_layer_metrics(layer_rows, peaks, dtype)
        rows += layer_rows
    if "e2e" in suites:
        rows += run_e2e(dev, dtype, level, compile_)
    if "spider" in suites:
        rows += run_spider(dev, dtype, level)
    meta["seconds"] = round(time.time() - started, 1)
    print(f"fastpeft bench ({level}) on {meta['device']}, {dtype}, git {meta['git_sha']}")
    print(f"measured peaks: {peaks['copy_gbps']:.0f} GB/s copy, "
          f"{peaks['matmul_tflops']:.2f} TFLOP/s {peaks['matmul_dtype']} matmul")  # fmt: skip
    for name in suites:
        print(f"\n[{name}]\n" + results.format_table(rows, name))
    name = f"bench_{suite}_{level}"
    written = results.write_json_csv(out, name, meta, rows)
    written += results.write_plots(out, name, meta, rows)
    print("\nwrote " + ", ".join(str(p) for p in written))
    return {**meta, "rows": rows, "files": [str(p) for p in written]}
