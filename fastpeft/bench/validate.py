"""Checks of `fastpeft bench`'s arguments, made before any work starts: a bad `--out` found after
minutes of measuring would throw those minutes away."""

import os
from pathlib import Path

import torch

DTYPES = ("float32", "bfloat16", "float16")


def check_out(out: Path) -> str | None:
    """Why `out` cannot receive results, or None. It may exist as a writable directory, or be
    missing with an existing parent (bench creates the last component only: a mistyped path
    should not silently grow a directory tree)."""
    if out.exists():
        if not out.is_dir():
            return f"--out {out}: exists and is not a directory"
        if not os.access(out, os.W_OK | os.X_OK):
            return f"--out {out}: directory is not writable"
        return None
    parent = out.absolute().parent
    if not parent.is_dir():
        return f"--out {out}: parent directory {parent} does not exist (create it first)"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--out {out}: cannot create it, {parent} is not writable"
    return None


def check_device(device: str | None) -> str | None:
    """Why `device` cannot run the benchmark here, or None (None: pick cuda or cpu)."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        return f"--device {device!r}: {exc}"
    if parsed.type not in ("cpu", "cuda"):
        return f"--device {device!r}: only cpu and cuda are supported"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {device!r}: no CUDA device is available here"
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            return f"--device {device!r}: only {torch.cuda.device_count()} CUDA device(s)"
    return None


def check_dtype(dtype: str | None) -> str | None:
    if dtype is None or dtype in DTYPES:
        return None
    return f"--dtype {dtype!r}: must be one of {', '.join(DTYPES)}"


def bench_errors(out: Path, device: str | None, dtype: str | None) -> list[str]:
    """Every problem with the arguments, in the order they are listed in `--help`."""
    return [e for e in (check_out(out), check_dtype(dtype), check_device(device)) if e]


def proof_errors(level: str | None, device: str | None, budget: float) -> list[str]:
    """Problems only the proof suite has: it runs at full shapes on a GPU or as a smoke check."""
    errors = []
    if level == "quick":
        errors.append("--quick: the proof suite runs full shapes on a GPU, or --smoke")
    cpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cpu")
    if cpu and level != "smoke":
        errors.append("--suite proof: no CUDA device here; pass --smoke to check the code path")
    if not budget > 0:
        errors.append(f"--budget {budget:g}: must be a positive number of seconds")
    return errors
