"""Timing and device ceilings shared by the benchmark suites.

GPU: `triton.testing.do_bench` (CUDA events, L2 flushed between calls) median with p20/p80. CPU:
a wall-clock loop after warm-up; callers rotate inputs so caches do not flatter.
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, reps: int = 20) -> Timing:
    """Median, p20 and p80 milliseconds of `fn()` on `device`."""
    if device.type == "cuda":
        import triton.testing

        median, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])
        return Timing(median, p20, p80)
    for _ in range(max(1, reps // 5)):
        fn()
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    ordered = sorted(seconds)
    return Timing(
        1e3 * statistics.median(seconds),
        1e3 * ordered[int(0.2 * (len(ordered) - 1))],
        1e3 * ordered[int(0.8 * (len(ordered) - 1))],
    )


def measured_peaks(device: torch.device, quick: bool = True) -> dict[str, float]:
    """The device's measured ceilings: copy bandwidth (GB/s, read + write counted) and dense
    matmul throughput (TFLOP/s, bf16 on a GPU, fp32 on a CPU)."""
    numel = (1 << 28) if device.type == "cuda" else (1 << 22 if quick else 1 << 24)
    src = torch.empty(numel, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    copy = time_call(lambda: dst.copy_(src), device, reps=10)
    size = 8192 if device.type == "cuda" else (1024 if quick else 2048)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    matmul = time_call(lambda: a @ b, device, reps=10)
    return {
        "copy_gbps": 2 * numel * 4 / (copy.median_ms * 1e-3) / 1e9,
        "matmul_tflops": 2 * size**3 / (matmul.median_ms * 1e-3) / 1e12,
        "matmul_dtype": str(dtype).replace("torch.", ""),
    }
