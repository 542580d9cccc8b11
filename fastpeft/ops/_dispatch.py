"""The one place that chooses a kernel backend for a call: Triton, or the PyTorch path."""

import torch

from .. import _triton, env

BACKENDS = ("auto", "triton", "torch")


def check_backend_name(backend: str, argument: str = "backend") -> None:
    if backend not in BACKENDS:
        raise ValueError(f"{argument} must be one of {BACKENDS}, got {backend!r}")


def resolve(backend: str, device: torch.device) -> str:
    """Turn 'auto' into a concrete backend for tensors on `device`; check it can run there.

    'auto' picks Triton on CUDA and the PyTorch path elsewhere (the Triton interpreter is for
    tests, never chosen automatically); FASTPEFT_BACKEND overrides 'auto'.
    """
    check_backend_name(backend)
    if backend == "auto":
        override = env.backend_override()
        if override is not None:
            if override not in ("triton", "torch"):
                raise ValueError(
                    f"environment variable FASTPEFT_BACKEND must be 'triton' or 'torch', "
                    f"got {override!r}"
                )
            backend = override
        else:
            backend = "triton" if device.type == "cuda" and _triton.usable_on(device) else "torch"
    if backend == "triton" and not _triton.usable_on(device):
        raise RuntimeError(f"fastpeft backend='triton': {_triton.why_unusable(device)}")
    return backend
