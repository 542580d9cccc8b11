"""Timing LoRA's fused and hybrid paths against each other for one shape (the dispatcher's race,
fastpeft/triton_path/race.py)."""

import torch

from .race import random_source, time_backends


def race(backends, device, dtype, shape, sizes, variant) -> dict[str, float]:
    """{backend: seconds} for one forward + backward of a LoRA linear with x [M, K], W [N, K]
    (`shape` = (M, N, K)) in `dtype`, rank sizes["rank"], and `variant` = (adapter dtype,
    whether dropout is on: the time does not depend on p)."""
    M, N, K = shape
    R = sizes["rank"]
    adapter_dtype, dropout = variant
    p = 0.1 if dropout else 0.0
    rand = random_source(device, dtype)
    x, w, dy = rand(M, K), rand(N, K, scale=K**-0.5), rand(M, N)
    a, b = rand(R, K, dt=adapter_dtype, scale=K**-0.5), rand(N, R, dt=adapter_dtype)
    seed = torch.tensor([1234], device=device) if p > 0 else None

    def step(impl) -> None:
        _y, t, keep = impl.forward(x, w, None, a, b, seed, 2.0, p)
        impl.backward(dy, x, w, a, b, t, keep, seed, 2.0, p, True)

    return time_backends("lora", backends, device, step)
