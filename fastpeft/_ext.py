"""Lazy access to the compiled extension ``fastpeft._C``.

Importing this module never loads the extension: callers that have a pure-PyTorch fallback use
:func:`available`, callers that need the extension use :func:`require` and get an error that says
how to rebuild it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

REBUILD_CMD = "pip install -e . --no-build-isolation"

_NOT_TRIED = object()
_module: ModuleType | None | object = _NOT_TRIED
_import_error: str | None = None


def load() -> ModuleType | None:
    """Import ``fastpeft._C`` once; return it, or None if it is not built or fails to load."""
    global _module, _import_error
    if _module is _NOT_TRIED:
        try:
            # The extension links against libtorch; torch must be loaded before it.
            import torch  # noqa: F401

            _module = importlib.import_module("fastpeft._C")
        except (ImportError, OSError) as exc:  # OSError: a broken shared library
            _module = None
            _import_error = f"{type(exc).__name__}: {exc}"
    return _module  # type: ignore[return-value]


def available() -> bool:
    """True if the compiled extension can be imported."""
    return load() is not None


def import_error() -> str | None:
    """Why the extension failed to import (None if it loaded or was not tried yet)."""
    return _import_error


def require() -> ModuleType:
    """Return the extension or raise RuntimeError with the import error and the rebuild command."""
    mod = load()
    if mod is None:
        raise RuntimeError(
            f"fastpeft._C (the compiled C++/CUDA extension) is not available: {_import_error}. "
            f"Rebuild it from the repository root with: {REBUILD_CMD}"
        )
    return mod


def abs_moments(tensors):
    """Per-tensor absolute moments, accumulated in float64.

    Args:
        tensors: sequence of n contiguous floating-point tensors (float32/float16/bfloat16/float64,
            any shape) all on one device.

    Returns:
        float64 tensor of shape [n, 3] on that device; row i is
        ``(sum |tensors[i]|, sum tensors[i]**2, tensors[i].numel())``. An empty list gives a
        [0, 3] CPU tensor. The reduction order is fixed, so repeated calls are bitwise equal
        (also across CPU thread counts).

    Raises:
        ValueError: a tensor is non-contiguous, not floating point, or on another device than
            ``tensors[0]`` (the message names ``tensors[i]``).
        RuntimeError: the extension is not built, or CUDA tensors on a CPU-only build.
    """
    return require().abs_moments(list(tensors))
