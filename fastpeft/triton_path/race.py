"""Timing a method's backends against each other on one call's shape (the dispatcher's race).

`time_backends` runs each backend's forward and backward (a `step(impl)` the method supplies, on
inputs it drew from a private generator, so the caller's random stream is untouched) once to
compile the kernels, then a few timed runs, and returns the best per backend. The dispatcher
keeps the fastest for the shape bucket: the choice is made once, then deterministic.
"""

import time
from collections.abc import Callable

import torch

_REPEATS = 3


def time_backends(method: str, backends, device: torch.device, step: Callable) -> dict[str, float]:
    """{backend: seconds} of `step(implementation module)` for each of `backends`."""
    from .. import dispatch

    seconds = {}
    for backend in backends:
        impl = dispatch.implementation(method, backend)
        step(impl)  # compiles
        seconds[backend] = min(_timed(step, impl, device) for _ in range(_REPEATS))
    return seconds


def random_source(device: torch.device, dtype: torch.dtype) -> Callable:
    """rand(*size, dt=dtype, scale=1.0): normal draws from a private generator seeded with 0."""
    g = torch.Generator(device=device).manual_seed(0)

    def rand(*size, dt=dtype, scale=1.0):
        return (torch.randn(*size, generator=g, device=device) * scale).to(dt)

    return rand


def _timed(step: Callable, impl, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    step(impl)
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
