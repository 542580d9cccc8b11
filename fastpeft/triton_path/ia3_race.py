"""Timing IA3's fused and hybrid paths against each other for one shape (the dispatcher's race,
fastpeft/triton_path/race.py)."""

from .race import random_source, time_backends


def race(backends, device, dtype, shape, sizes, variant) -> dict[str, float]:
    """{backend: seconds} for one training forward + backward (dx and dl) of an IA3 linear with
    x [M, K], W [N, K] (`shape` = (M, N, K)) in `dtype`; `variant` = (the vector's dtype,
    feedforward)."""
    M, N, K = shape
    vector_dtype, feedforward = variant
    rand = random_source(device, dtype)
    x, w, dy = rand(M, K), rand(N, K, scale=K**-0.5), rand(M, N)
    ia3_l = 1.0 + 0.1 * rand(K if feedforward else N, dt=vector_dtype)

    def step(impl) -> None:
        _y, z = impl.forward(x, w, None, ia3_l, feedforward, not feedforward)
        impl.backward(dy, x if feedforward else z, w, ia3_l, feedforward, True, True)

    return time_backends("ia3", backends, device, step)
