"""Per-step cost of SPIDER (SPEC §6) over a 7B-class set of tensors.

Providers, each on its own tensors, timed interleaved (one step of each per repetition, order
rotated) so the per-repetition ratios cancel a shared machine's drifts:

- ``spider_adamw``: one ``fastpeft.SpiderAdamW`` step (AdamW with SPIDER fused in: three
  multi-tensor passes), the fused optimizer step;
- ``adamw+spider``: one AdamW step followed by ``Spider.step()`` (four passes);
- ``fastpeft``: ``fastpeft.spider.Spider(params).step()`` alone (three multi-tensor passes);
- ``reference``: the paper-style per-tensor loop, ``fastpeft.reference.spider.SpiderReference``
  with fp32 state (five fp32 copies, ~20 kernels and two host syncs per tensor), alone;
- ``adamw``: one ``torch.optim.AdamW`` step over the same parameters (``fused=True`` on a GPU,
  ``foreach=True`` on the CPU), the cost SPIDER is measured against;
- ``mask_adamw``: one ``fastpeft.MagnitudeMaskAdamW`` step (AdamW with the MagnitudeMask
  baseline fused in: one pass), and ``adamw+mask``: AdamW then ``MagnitudeMask.step()``.

AdamW inside ``adamw+spider`` is the same as the ``adamw`` provider's. Bytes per element, for
s-byte parameters (`bytes_per_element`): AdamW 7·s (w, m, v read and written, g read: moments in
the parameter's dtype, as torch keeps them); Spider 5·s + 16 (pass 1 reads g and G and writes G;
pass 2 reads θ₀ and G; pass 3 reads θ₀, G and w and writes w); SpiderAdamW 10·s + 16 (Spider's
passes 1 and 2, then w, m, v read and written and g, θ₀, G read once). bf16: 14, 26, 36.
MagnitudeMaskAdamW 8·s + 1 (AdamW's, θ₀ and the 1-byte mask read); AdamW + MagnitudeMask
10·s + 1 (the mask step reads θ₀, the mask and w and writes w). bf16: 17 and 21.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence

import torch

from ..reference.spider import SpiderReference
from ..spider import MagnitudeMask, MagnitudeMaskAdamW, Spider, SpiderAdamW
from .stats import paired_ratios, spread
from .timing import time_interleaved


def llama_shapes(layers: int, hidden: int = 4096, intermediate: int = 11008) -> list[tuple]:
    """Trainable tensors of ``layers`` Llama decoder layers: q/k/v/o [h, h], gate/up [i, h],
    down [h, i] and the two norm weights [h] (32 layers of 4096/11008: 6.48B elements)."""
    per_layer = [(hidden, hidden)] * 4 + [(intermediate, hidden)] * 2 + [(hidden, intermediate)]
    per_layer += [(hidden,), (hidden,)]
    return per_layer * layers


# Bytes per element of each provider's step as (per byte of the parameter dtype, constant).
_BYTES = {
    "fastpeft": (5, 16),
    "adamw": (7, 0),
    "adamw+spider": (12, 16),
    "spider_adamw": (10, 16),
    "mask_adamw": (8, 1),
    "adamw+mask": (10, 1),
}


def bytes_per_element(provider: str, dtype: torch.dtype) -> int | None:
    """Bytes one step of `provider` moves per parameter element (None for the paper loop, whose
    traffic depends on its temporaries)."""
    if provider not in _BYTES:
        return None
    per_byte, constant = _BYTES[provider]
    return per_byte * torch.empty((), dtype=dtype).element_size() + constant


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


def _state_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t.dim() > 0)


def _adamw(params, device):
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(params, lr=1e-5, fused=fused, foreach=not fused)
    opt.step()  # allocate the state before timing
    state = _state_bytes(t for s in opt.state.values() for t in s.values())
    return opt, state, "fused" if fused else "foreach"


def _provider_adamw(params, device, backend):
    opt, state, kind = _adamw(params, device)
    return opt.step, state, kind


def _provider_spider(params, device, backend):
    spider = Spider(params, backend=backend)
    return spider.step, _state_bytes(spider.theta0 + spider.G), spider.backends[0]


def _provider_adamw_spider(params, device, backend):
    opt, state, kind = _adamw(params, device)
    spider = Spider(params, backend=backend)

    def step() -> None:
        opt.step()
        spider.step()

    return step, state + _state_bytes(spider.theta0 + spider.G), f"{kind}+{spider.backends[0]}"


def _provider_spider_adamw(params, device, backend):
    opt = SpiderAdamW(params, lr=1e-5, backend=backend)
    opt.step()  # allocate the AdamW state before timing
    spider = opt.spider
    state = _state_bytes(t for s in opt.state.values() for t in s.values())
    return opt.step, state + _state_bytes(spider.theta0 + spider.G), spider.backends[0]


def _mask_backend(backend: str) -> str:
    # MagnitudeMaskAdamW runs Triton or PyTorch; SPIDER's extension backends map to "auto".
    return backend if backend in ("torch", "triton") else "auto"


def _provider_mask_adamw(params, device, backend):
    opt = MagnitudeMaskAdamW(params, lr=1e-5, backend=_mask_backend(backend))
    opt.step()  # allocate the AdamW state before timing
    state = _state_bytes(t for s in opt.state.values() for t in s.values())
    used = opt.backend_for(params[0].device, params[0].dtype)
    return opt.step, state + _state_bytes(opt.mask.theta0 + opt.mask.masks), used


def _provider_adamw_mask(params, device, backend):
    opt, state, kind = _adamw(params, device)
    mask = MagnitudeMask(params)

    def step() -> None:
        opt.step()
        mask.step()

    return step, state + _state_bytes(mask.theta0 + mask.masks), f"{kind}+torch"


def _provider_reference(params, device, backend):
    ref = SpiderReference(params, dtype=torch.float32)
    # plus I_ft and c (transient, fp32) inside each step
    return ref.step, _state_bytes([*ref.theta0, *ref.i_pre, *ref.G]), "torch"


_PROVIDERS = {
    "spider_adamw": _provider_spider_adamw,
    "adamw+spider": _provider_adamw_spider,
    "fastpeft": _provider_spider,
    "reference": _provider_reference,
    "adamw": _provider_adamw,
    "mask_adamw": _provider_mask_adamw,
    "adamw+mask": _provider_adamw_mask,
}
PROVIDERS = tuple(_PROVIDERS)


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
    fn, state, row["backend"] = _PROVIDERS[provider](params, device, backend)
    fn()  # one step counted in the peak (and a warm-up)
    _sync(device)
    if device.type == "cuda":
        row["peak_extra_mib"] = round(_peak_extra_mib(device, before), 1)
    row.update(tensors=len(params), elements=numel, state_bytes_per_element=round(state / numel, 2))
    return fn, row


def _put_ratio(row: dict, name: str, numerator: list, denominator: list) -> None:
    ratio = spread(paired_ratios(numerator, denominator))
    row.update({name: ratio.median, f"{name}_p20": ratio.p20, f"{name}_p80": ratio.p80})


def _add_ratios(rows: dict[str, dict], dtype: torch.dtype) -> None:
    """SPIDER rows: the modelled bytes' rate (GB/s), the paper loop's time over Spider's, and
    time relative to the AdamW step (medians of per-repetition ratios with p20 and p80)."""
    for provider in ("fastpeft", "spider_adamw", "adamw+spider", "mask_adamw", "adamw+mask"):
        row = rows.get(provider)
        if row is None:
            continue
        moved = bytes_per_element(provider, dtype) * row["elements"]
        row["bytes_per_element"] = bytes_per_element(provider, dtype)
        row["gbps"] = round(moved / (row["median_ms"] * 1e-3) / 1e9, 1)
        if "adamw" in rows:
            _put_ratio(row, "time_vs_adamw", row["times_ms"], rows["adamw"]["times_ms"])
    if "fastpeft" in rows and "reference" in rows:
        reference, fast = rows["reference"]["times_ms"], rows["fastpeft"]["times_ms"]
        _put_ratio(rows["fastpeft"], "speedup_vs_reference", reference, fast)


def bench_spider_step(
    shapes: Sequence[tuple],
    dtype: torch.dtype,
    device: torch.device,
    providers: Sequence[str] = PROVIDERS,
    reference_shapes: Sequence[tuple] | None = None,
    steps: int = 10,
    warmup: int = 2,
    backend: str = "auto",
) -> list[dict]:
    """Rows for every provider (per-repetition `times_ms`, median, p20, p80); the SPIDER rows
    (Spider, SpiderAdamW, AdamW + Spider) with their time relative to AdamW (medians of
    per-repetition ratios with p20 and p80), modelled bytes per element and fraction of the copy
    bandwidth, Spider's with its speedup over the paper loop.

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
    _add_ratios(rows, dtype)
    if any("gbps" in row for row in rows.values()):
        bw = copy_bandwidth(device)
        for row in rows.values():
            if "gbps" in row:
                row["copy_gbps"] = round(bw / 1e9, 1)
                row["fraction_of_copy_bw"] = round(row["gbps"] * 1e9 / bw, 3)
    del fns
    _free(device)
    return list(rows.values())
