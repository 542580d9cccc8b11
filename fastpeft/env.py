"""The one place fastpeft reads environment variables.

- ``TRITON_INTERPRET=1``: Triton kernels run on CPU tensors through Triton's interpreter (slow;
  meant for tests on machines without a GPU).
- ``FASTPEFT_BACKEND``: overrides ``backend="auto"`` for every method that has the named backend
  (``torch``, ``triton``, ``cpp``, ``cuda``; fastpeft/dispatch.py applies it), e.g. to compare
  paths without editing code.
- ``OUT``: where ``fastpeft bench`` writes when ``--out`` is not given (the device machines that
  run the GPU proof kit collect what lands there).
"""

import os


def triton_interpret() -> bool:
    """True when Triton kernels run under the CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def backend_override() -> str | None:
    """The backend forced by FASTPEFT_BACKEND, or None."""
    value = os.environ.get("FASTPEFT_BACKEND", "").strip().lower()
    return value or None


def bench_out_dir() -> str | None:
    """The folder named by OUT (bench's default output folder when set), or None."""
    value = os.environ.get("OUT", "").strip()
    return value or None
