"""Per-step cost of SPIDER (SPEC §6) over a 7B-class set of tensors.

Providers, each on its own tensors, timed interleaved (one step of each per repetition, order
rotated) so the per-repetition ratios cancel a shared machine's drifts:

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
import time
from collections.abc import Callable, Sequence

import torch

from ..reference.spider import SpiderReference
from ..spider import Spider
from .stats import paired_ratios, spread
from .timing import time_interleaved


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


def copy_bandwidth(device: torch.device, numel: int | None = None, repeats: int = 30) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write of ``numel`` fp32;
    default 512 MiB on a GPU, 128 MiB on the CPU: well past the caches either way), from the
    fastest of ``repeats`` warmed-up copies: a ceiling, which a busy machine only lowers."""
    if numel is None:
        numel = 1 << 27 if device.type == "cuda" else 1 << 25
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 3):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - start)
    del src, dst
    _free(device)
    return 2 * 4 * numel / min(times[3:])


def _make(shapes: Sequence[tuple], dtype: torch.dtype, device: torch.device, seed: int):
    g = torch.Generator(device=device).manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=g, device=device).mul_(0.02).to(dtype))
        p.grad = torch.randn(s, generator=g, device=device).mul_(1e-3).to(dtype)
        params.append(p)
    return params


def _peak_extra_mib(device: torch.device, before: int) -> float | None:
    """MiB the allocator peaked at above `before` (GPU; None on a CPU, which has no such count)."""
    if device.type != "cuda":
        return None
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def setup_provider(
    provider: str, shapes: Sequence[tuple], dtype: torch.dtype, device: torch.device, backend: str
) -> tuple[Callable[[], None], dict]:
    """(one step of `provider` on fresh tensors, its row so far: state bytes per element and, on
    a GPU, the peak memory its state and one step add above the parameters and gradients)."""
    params = _make(shapes, dtype, device, seed=0)
    numel = sum(p.numel() for p in params)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
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
    fn()  # one step counted in the peak (and a warm-up)
    _sync(device)
    if device.type == "cuda":
        row["peak_extra_mib"] = round(_peak_extra_mib(device, before), 1)
    row.update(tensors=len(params), elements=numel, state_bytes_per_element=round(state / numel, 2))
    return fn, row


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
    """Rows for every provider (per-repetition `times_ms`, median, p20, p80), fastpeft's with
    its speedup over the reference and time relative to AdamW (medians of per-repetition
    ratios with p20 and p80) and its fraction of the copy bandwidth.

    ``reference_shapes`` (default: ``shapes``) lets the slow, memory-hungry paper loop run on a
    subset; its times are then scaled by the element ratio (it is a per-tensor loop whose cost is
    linear in the tensors), and the row says so.
    """
    fns, rows = {}, {}
    for provider in providers:
        use = reference_shapes if provider == "reference" and reference_shapes else shapes
        fns[provider], rows[provider] = setup_provider(provider, use, dtype, device, backend)
    factors = {}
    full = sum(torch.Size(s).numel() for s in shapes)
    for provider, row in rows.items():
        factors[provider] = full / row["elements"]
        if row["elements"] != full:
            row["measured_on_elements"] = row["elements"]
            row["elements"] = full
            row["scaled"] = f"x{factors[provider]:.2f} from a subset"
    samples = time_interleaved(fns, device, steps, warmup)
    for provider, row in rows.items():
        times = [t * factors[provider] for t in samples[provider]]
        s = spread(times)
        row.update(median_ms=s.median, p20_ms=s.p20, p80_ms=s.p80, times_ms=times)
    fast = rows.get("fastpeft")
    if fast:
        moved = spider_bytes_per_element(dtype) * fast["elements"]
        fast["gbps"] = round(moved / (fast["median_ms"] * 1e-3) / 1e9, 1)
        if "reference" in rows:
            ratio = spread(paired_ratios(rows["reference"]["times_ms"], fast["times_ms"]))
            fast.update(speedup_vs_reference=ratio.median, speedup_vs_reference_p20=ratio.p20)
            fast["speedup_vs_reference_p80"] = ratio.p80
        if "adamw" in rows:
            ratio = spread(paired_ratios(fast["times_ms"], rows["adamw"]["times_ms"]))
            fast.update(time_vs_adamw=ratio.median, time_vs_adamw_p20=ratio.p20)
            fast["time_vs_adamw_p80"] = ratio.p80
        bw = copy_bandwidth(device)
        fast["copy_gbps"] = round(bw / 1e9, 1)
        fast["fraction_of_copy_bw"] = round(fast["gbps"] * 1e9 / bw, 3)
    del fns
    _free(device)
    return list(rows.values())
