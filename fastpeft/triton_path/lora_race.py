"""Timing LoRA's fused and hybrid paths against each other for one shape (the dispatcher's race).

`race` runs each candidate backend's forward and backward on inputs of the call's shape and
dtypes, drawn from a private generator (the caller's random stream is left untouched), and
returns the best of a few timed runs per backend after one warm-up (which compiles the
kernels). The dispatcher keeps the faster backend for the shape bucket: the choice is made once,
then deterministic.
"""

import time

import torch

_REPEATS = 3


def race(backends, device, dtype, shape, sizes, variant) -> dict[str, float]:
    """{backend: seconds} for one forward + backward of a LoRA linear with x [M, K], W [N, K]
    (`shape` = (M, N, K)) in `dtype`, rank sizes["rank"], and `variant` = (adapter dtype,
    whether dropout is on: the time does not depend on p)."""
    from .. import dispatch

    M, N, K = shape
    R = sizes["rank"]
    adapter_dtype, dropout = variant
    p = 0.1 if dropout else 0.0
    g = torch.Generator(device=device).manual_seed(0)

    def rand(*size, dt=dtype, scale=1.0):
        return (torch.randn(*size, generator=g, device=device) * scale).to(dt)

    x, w, dy = rand(M, K), rand(N, K, scale=K**-0.5), rand(M, N)
    a, b = rand(R, K, dt=adapter_dtype, scale=K**-0.5), rand(N, R, dt=adapter_dtype)
    seed = torch.tensor([1234], device=device) if p > 0 else None
    seconds = {}
    for backend in backends:
        impl = dispatch.implementation("lora", backend)
        step = (impl, (x, w, a, b, seed, dy, p))
        _step(*step)  # compiles
        seconds[backend] = min(_timed(step, device) for _ in range(_REPEATS))
    return seconds


def _step(impl, inputs) -> None:
    x, w, a, b, seed, dy, p = inputs
    _y, t, keep = impl.forward(x, w, None, a, b, seed, 2.0, p)
    impl.backward(dy, x, w, a, b, t, keep, seed, 2.0, p, True)


def _timed(step, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    _step(*step)
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
