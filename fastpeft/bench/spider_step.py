"""Per-step cost of SPIDER (SPEC §6) over a 7B-class set of tensors.

Providers, each timed alone on fresh tensors (so peak memory is one provider's):

- ``fastpeft``: ``fastpeft.spider.Spider(params).step()`` (three multi-tensor passes);
- ``reference``: the paper-style per-tensor loop, ``fastpeft.reference.spider.SpiderReference``
  with fp32 state (five fp32 copies, ~20 kernels and two host syncs per tensor);
- ``adamw``: one ``torch.optim.AdamW`` step over the same parameters (``fused=True`` on a GPU,
  ``foreach=True`` on the CPU), the cost SPIDER should stay within.

Bandwidth: SPIDER's three passes move 5·s + 16 bytes per element for s-byte parameters (pass 1
reads g and G and writes G; pass 2 reads θ₀ and G; pass 3 reads θ₀, G and w and writes w), i.e.
26 B for bf16, against the device's measured copy bandwidth.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from ..reference.spider import SpiderReference
from ..spider import Spider


def llama_shapes(layers: int, hidden: int = 4096, intermediate: int = 11008) -> list[tuple]:
    """Trainable tensors of ``layers`` Llama decoder layers: q/k/v/o [h, h], gate/up [i, h],
    down [h, i] and the two norm weights [h] (32 layers of 4096/11008: 6.48B elements)."""
    per_layer = [(hidden, hidden)] * 4 + [(intermediate, hidden)] * 2 + [(hidden, intermediate)]
    per_layer += [(hidden,), (hidden,)]
    return per_layer * layers


def spider_bytes_per_element(dtype: torch.dtype) -> int:
    s = torch.empty((), dtype=dtype).element_size()
    return 5 * s + 16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def copy_bandwidth(device: torch.device, numel: int | None = None, repeats: int = 10) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write of ``numel`` fp32;
    default 512 MiB on a GPU, 64 MiB on the CPU: well past the caches either way)."""
    if numel is None:
        numel = 1 << 27 if device.type == "cuda" else 1 << 24
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 2):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - start)
    del src, dst
    _free(device)
    return 2 * 4 * numel / statistics.median(times[2:])


def _make(shapes: Sequence[tuple], dtype: torch.dtype, device: torch.device, seed: int):
    g = torch.Generator(device=device).manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=g, device=device).mul_(0.02).to(dtype))
        p.grad = torch.randn(s, generator=g, device=device).mul_(1e-3).to(dtype)
        params.append(p)
    return params


def _time(fn: Callable[[], None], device: torch.device, steps: int, warmup: int) -> list[float]:
    out = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            out.append(time.perf_counter() - start)
    return out


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def bench_provider(
    provider: str,
    shapes: Sequence[tuple],
    dtype: torch.dtype,
    device: torch.device,
    steps: int = 10,
    warmup: int = 2,
    backend: str = "auto",
) -> dict:
    """Time one provider's step; returns a result row (times in ms, state bytes per element)."""
    params = _make(shapes, dtype, device, seed=0)
    numel = sum(p.numel() for p in params)
    _peak_reset(device)
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    row: dict = {"provider": provider, "dtype": str(dtype).replace("torch.", "")}
    if provider == "fastpeft":
        spider = Spider(params, backend=backend)
        row["backend"] = spider.backends[0]
        state = sum(t.numel() * t.element_size() for t in spider.theta0 + spider.G)
        fn = spider.step
    elif provider == "reference":
        ref = SpiderReference(params, dtype=torch.float32)
        state = sum(
            t.numel() * t.element_size() for ts in (ref.theta0, ref.i_pre, ref.G) for t in ts
        )  # plus I_ft and c (transient, fp32) inside each step
        fn = ref.step
    elif provider == "adamw":
        fused = device.type == "cuda"
        opt = torch.optim.AdamW(params, lr=1e-5, fused=fused, foreach=not fused)
        opt.step()  # allocate the state before timing
        state = sum(
            t.numel() * t.element_size()
            for s in opt.state.values()
            for t in s.values()
            if isinstance(t, torch.Tensor) and t.dim() > 0
        )
        row["backend"] = "fused" if fused else "foreach"
        fn = opt.step
    else:
        raise ValueError(f"unknown provider {provider!r}")
    times = _time(fn, device, steps, warmup)
    ordered = sorted(times)
    row.update(
        tensors=len(params),
        elements=numel,
        median_ms=round(1e3 * statistics.median(times), 3),
        p20_ms=round(1e3 * ordered[int(0.2 * (len(ordered) - 1))], 3),
        p80_ms=round(1e3 * ordered[int(0.8 * (len(ordered) - 1))], 3),
        state_bytes_per_element=round(state / numel, 2),
    )
    if base is not None:
        row["peak_extra_gib"] = round((_peak(device) - base) / 2**30, 2)
    if provider == "fastpeft":
        moved = spider_bytes_per_element(dtype) * numel
        row["gbps"] = round(moved / statistics.median(times) / 1e9, 1)
    del params, fn
    _free(device)
    return row


def bench_spider_step(
    shapes: Sequence[tuple],
    dtype: torch.dtype,
    device: torch.device,
    providers: Sequence[str] = ("fastpeft", "reference", "adamw"),
    reference_shapes: Sequence[tuple] | None = None,
    steps: int = 10,
    warmup: int = 2,
    backend: str = "auto",
) -> list[dict]:
    """Rows for every provider, with speedups and the fraction of copy bandwidth.

    ``reference_shapes`` (default: ``shapes``) lets the slow, memory-hungry paper loop run on a
    subset; its time is then scaled by the element ratio (it is a per-tensor loop whose cost is
    linear in the tensors), and the row says so.
    """
    rows = []
    for provider in providers:
        use = reference_shapes if provider == "reference" and reference_shapes else shapes
        row = bench_provider(provider, use, dtype, device, steps, warmup, backend)
        if use is not shapes:
            full = sum(torch.Size(s).numel() for s in shapes)
            factor = full / row["elements"]
            row["measured_on_elements"] = row["elements"]
            row["elements"] = full
            for key in ("median_ms", "p20_ms", "p80_ms"):
                row[key] = round(row[key] * factor, 3)
            row["scaled"] = f"x{factor:.2f} from a subset"
        rows.append(row)
    by = {r["provider"]: r for r in rows}
    fast = by.get("fastpeft")
    if fast:
        if "reference" in by:
            fast["speedup_vs_reference"] = round(
                by["reference"]["median_ms"] / fast["median_ms"], 2
            )
        if "adamw" in by:
            fast["ratio_to_adamw"] = round(fast["median_ms"] / by["adamw"]["median_ms"], 3)
        bw = copy_bandwidth(device)
        fast["copy_gbps"] = round(bw / 1e9, 1)
        fast["fraction_of_copy_bw"] = round(fast["gbps"] * 1e9 / bw, 3)
    return rows
