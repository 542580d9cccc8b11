"""Whether Triton kernels can run here (launch settings: fastpeft/triton_path/launch.py)."""

import torch

from . import env

_NOT_PROBED = "not probed"
# A plain module global rather than functools.cache: torch.compile traces through this module,
# and dynamo warns about (and bypasses) lru_cache wrappers.
_import_error: str | None = _NOT_PROBED


def import_error() -> str | None:
    """None when triton imports, else the import error's text."""
    global _import_error
    if _import_error == _NOT_PROBED:
        try:
            import triton  # noqa: F401

            _import_error = None
        except Exception as exc:  # pragma: no cover - triton is a hard dependency
            _import_error = f"{type(exc).__name__}: {exc}"
    return _import_error


def usable_on(device: torch.device) -> bool:
    """True when Triton kernels can run on tensors of `device`."""
    if import_error() is not None:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and env.triton_interpret()


def why_unusable(device: torch.device) -> str:
    """A sentence saying why Triton cannot run on `device` (for error messages)."""
    if import_error() is not None:
        return f"triton does not import ({import_error()})"
    if device.type == "cpu":
        return (
            "Triton kernels need a CUDA GPU; on a CPU they run only through Triton's interpreter: "
            "set TRITON_INTERPRET=1 before starting Python (slow; meant for tests), or use "
            "backend='torch'"
        )
    return f"Triton kernels do not run on device type {device.type!r}"
