"""Timing and device ceilings shared by the benchmark suites.

Providers are timed interleaved: every repetition times each provider once, back to back, in an
order rotated from one repetition to the next, so a slow drift of a shared machine (thermal,
other processes) lands on every provider of that repetition alike instead of on whichever ran
last. A repetition is one call, after warm-up rounds: wall-clock on a CPU (callers rotate inputs
so caches do not flatter), CUDA events on a GPU with the L2 cache flushed before the call (as
`triton.testing.do_bench` does, without its per-call set-up, which made a layer case cost ~25 s).
"""

import time
from collections.abc import Callable

import torch

from .stats import quantile

_L2_FLUSH_BYTES = 256 << 20  # more than any current GPU's L2


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rotation(names: list[str], repetition: int) -> list[str]:
    """The order of repetition `repetition`: `names` rotated by it (no provider always first)."""
    k = repetition % len(names) if names else 0
    return names[k:] + names[:k]


class _Clock:
    """Milliseconds of one call of a function on `device`."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            self.flush = torch.empty(_L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device)
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.device.type != "cuda":
            start = time.perf_counter()
            fn()
            return 1e3 * (time.perf_counter() - start)
        self.flush.zero_()  # nothing of the previous call left in L2
        self.start.record()
        fn()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end)


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    reps: int,
    warmup: int | None = None,
) -> dict[str, list[float]]:
    """Milliseconds of each provider in each of `reps` repetitions (index i: repetition i for
    every provider), after `warmup` untimed rounds (default reps // 5, at least 1)."""
    names = list(fns)
    for _ in range(max(1, reps // 5) if warmup is None else warmup):
        for name in names:
            fns[name]()
            sync(device)
    clock = _Clock(device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in rotation(names, rep):
            samples[name].append(clock(fns[name]))
    return samples


def _best_throughput(fn: Callable[[], object], device: torch.device, reps: int) -> dict:
    """Seconds of `fn` as the best (fastest) and the median of `reps` warmed-up calls.

    A ceiling is what the machine can do, so the best call is the estimate: a shared machine
    only ever makes calls slower, never faster than the hardware allows."""
    for _ in range(3):
        fn()
    sync(device)
    seconds = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return {"best": min(seconds), "median": quantile(seconds, 0.5)}


def _copy_seconds(numel: int, device: torch.device, reps: int) -> dict:
    src = torch.empty(numel, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    return _best_throughput(lambda: dst.copy_(src), device, reps)


def measured_peaks(device: torch.device, quick: bool = True) -> dict[str, float | str]:
    """The device's measured ceilings: copy bandwidth (GB/s, read + write counted) and dense
    matmul throughput (TFLOP/s, bf16 on a GPU, fp32 on a CPU), each the best of many warmed-up
    calls (the `_median` figures say how far a typical call falls short).

    The copy moves 2 × 128 MiB on a CPU (past every cache: smaller copies partly hit the L3 and
    swing from run to run) and 2 × 1 GiB on a GPU."""
    gpu = device.type == "cuda"
    numel = 1 << 28 if gpu else 1 << 25
    reps = 30 if quick else 60
    copy = _copy_seconds(numel, device, reps)
    size = 8192 if gpu else (1024 if quick else 2048)
    dtype = torch.bfloat16 if gpu else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    matmul = _best_throughput(lambda: a @ b, device, reps)
    moved, flops = 2 * numel * 4, 2 * size**3
    peaks = {
        "copy_gbps": moved / copy["best"] / 1e9,
        "copy_gbps_median": moved / copy["median"] / 1e9,
        "matmul_tflops": flops / matmul["best"] / 1e12,
        "matmul_tflops_median": flops / matmul["median"] / 1e12,
        "matmul_dtype": str(dtype).replace("torch.", ""),
        "repetitions": reps,
    }
    if gpu:
        try:
            peaks.update(_l2_read_gbps(device, reps))
        except Exception as exc:  # noqa: BLE001 (the other ceilings stand; the error is kept)
            peaks["l2_read_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return peaks


_L2_PROBE_BYTES = 16 << 20  # inside every current GPU's L2 (40-60 MB), far past any L1
_L2_ROUNDS = 64  # 1 GiB read a call: a few hundred microseconds, launch cost negligible


def _l2_read_gbps(device: torch.device, reps: int) -> dict:
    """L2 read bandwidth (GB/s): a 16 MiB buffer read 64 times over by eight programs an SM with
    L1 bypassed (l2_probe.py), best and median of `reps` calls; the first round's DRAM
    reads are 1/64 of the bytes. The static model's L2 traffic waits on this figure."""
    from .l2_probe import l2_read  # Triton only where a GPU measures

    buf = torch.rand(_L2_PROBE_BYTES // 4, device=device)
    seconds = _best_throughput(lambda: l2_read(buf, _L2_ROUNDS), device, reps)
    moved = _L2_ROUNDS * _L2_PROBE_BYTES
    return {
        "l2_read_gbps": moved / seconds["best"] / 1e9,
        "l2_read_gbps_median": moved / seconds["median"] / 1e9,
        "l2_probe_mib": _L2_PROBE_BYTES >> 20,
    }


def best_peaks(first: dict, second: dict) -> dict:
    """Two measurements of the ceilings as one: the higher of each (see `_best_throughput`)."""
    merged = dict(first)
    for key in ("copy_gbps", "copy_gbps_median", "matmul_tflops", "matmul_tflops_median",
                "l2_read_gbps", "l2_read_gbps_median"):  # fmt: skip
        if key in first and key in second:
            merged[key] = max(first[key], second[key])
    merged["repetitions"] = first["repetitions"] + second["repetitions"]
    return merged
