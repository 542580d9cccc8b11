"""One bottleneck adapter (or a gate/up pair), forward + backward: eager PyTorch vs fastpeft.

Providers: "eager" (the literal reference of SPEC §3 with nn.Dropout-style masks drawn per call,
what a plain PyTorch adapter module runs), "compiled" (the same under torch.compile) and
"fastpeft" (the fused custom ops). fastpeft is checked against the eager reference (outputs and
every gradient, with dropout off so the masks cannot differ) before anything is timed, so a fast
wrong kernel never posts a number. On CUDA the times are triton.testing.do_bench medians with
p20/p80 in ms; elsewhere (smoke runs) a plain wall-clock loop.
"""

import statistics
import time

import torch

from ..ops import adapter as adapter_ops
from ..reference import adapter as reference


def _eager_single(z, w_down, w_up, scaling, activation, p):
    keep = torch.rand_like(z, dtype=w_down.dtype) >= p if p > 0 else None
    return (reference.adapter(z, w_down, w_up, scaling, activation, keep=keep, dropout_p=p),)


def _eager_pair(x, w_down_1, w_up_1, w_down_2, w_up_2, scaling, activation, p):
    keeps = [torch.rand_like(x, dtype=w_down_1.dtype) >= p if p > 0 else None for _ in range(2)]
    weights = (w_down_1, w_up_1, w_down_2, w_up_2)
    return reference.adapter_pair(x, *weights, scaling, activation, *keeps, p)


def _fused_single(backend):
    def run(z, w_down, w_up, scaling, activation, p):
        return (adapter_ops.adapter(z, w_down, w_up, scaling, activation, p, backend=backend),)

    return run


def _fused_pair(backend):
    def run(x, w_down_1, w_up_1, w_down_2, w_up_2, scaling, activation, p):
        weights = (w_down_1, w_up_1, w_down_2, w_up_2)
        return adapter_ops.adapter_pair(x, *weights, scaling, activation, p, backend=backend)

    return run


def make_inputs(M, d, H, pair, dtype, w_dtype, device, seed=0):
    """(leaves, grad_outputs): z/x [M, d] and the weights (N(0, 2/d), N(0, 1/H)), all with grad."""
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape, scale=1.0, dt=dtype):
        return (torch.randn(*shape, generator=g, device=device) * scale).to(dt).requires_grad_()

    weights = []
    for _ in range(2 if pair else 1):
        weights += [
            rand(H, d, scale=(2 / d) ** 0.5, dt=w_dtype),
            rand(d, H, scale=H**-0.5, dt=w_dtype),
        ]
    z = rand(M, d)
    grads = [
        torch.randn(M, d, generator=g, device=device).to(dtype) for _ in range(2 if pair else 1)
    ]
    return [z, *weights], grads


def _step(fn, leaves, grads, scaling, activation, p):
    outs = fn(*leaves, scaling, activation, p)
    return outs, torch.autograd.grad(outs, leaves, grads)


def _check(fused, leaves, grads, scaling, activation, dtype) -> float:
    """Max |fused − eager| / max|eager| over outputs and gradients; raises beyond the limit."""
    eager = _eager_pair if len(leaves) == 5 else _eager_single
    want_out, want_grads = _step(eager, leaves, grads, scaling, activation, 0.0)
    got_out, got_grads = _step(fused, leaves, grads, scaling, activation, 0.0)
    limit = 1e-4 if dtype == torch.float32 else 3e-2
    worst = 0.0
    for i, (g, w) in enumerate(zip((*got_out, *got_grads), (*want_out, *want_grads), strict=True)):
        rel = ((g.float() - w.float()).abs().max() / w.float().abs().max().clamp_min(1e-30)).item()
        if not rel <= limit:
            raise RuntimeError(f"fastpeft differs from eager in tensor {i}: {rel:.3e} > {limit}")
        worst = max(worst, rel)
    return worst


def _time(fn, device: torch.device, reps: int) -> tuple[float, float, float]:
    """(median, p20, p80) ms of fn."""
    if device.type == "cuda":
        import triton.testing

        return tuple(triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8]))
    fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    q = statistics.quantiles(samples, n=10, method="inclusive") if reps > 1 else samples * 9
    return statistics.median(samples), q[1], q[7]


def _peak_mb(fn, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def bench_adapter_layer(
    M=8192, d=4096, H=256, pair=False, activation="tanh", dropout=0.0, scaling=1.0,
    dtype=torch.bfloat16, w_dtype=torch.bfloat16, device="cuda", backend="triton",
    compiled=True, reps=5,
) -> dict:  # fmt: skip
    """A result row: per-provider forward+backward ms (median, p20, p80), peak MB and speedups."""
    device = torch.device(device)
    leaves, grads = make_inputs(M, d, H, pair, dtype, w_dtype, device)
    eager = _eager_pair if pair else _eager_single
    providers = {"eager": eager, "fastpeft": (_fused_pair if pair else _fused_single)(backend)}
    if compiled:
        providers["compiled"] = torch.compile(eager)
    row = dict(M=M, d=d, H=H, pair=pair, activation=activation, dropout=dropout)
    row.update(dtype=str(dtype), w_dtype=str(w_dtype), backend=backend)
    row["max_rel_err_vs_eager"] = _check(
        providers["fastpeft"], leaves, grads, scaling, activation, dtype
    )
    for name, fn in providers.items():

        def step(fn=fn):
            _step(fn, leaves, grads, scaling, activation, dropout)

        step()  # compile (torch.compile, Triton) outside the timed region
        row[f"{name}_ms"], row[f"{name}_p20_ms"], row[f"{name}_p80_ms"] = _time(step, device, reps)
        row[f"{name}_peak_mb"] = _peak_mb(step, device)
    row["eager_over_fastpeft"] = row["eager_ms"] / row["fastpeft_ms"]
    if compiled:
        row["compiled_over_fastpeft"] = row["compiled_ms"] / row["fastpeft_ms"]
    return row
