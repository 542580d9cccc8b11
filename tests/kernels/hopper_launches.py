"""The launches a Hopper GPU would get from every registered method, recorded without a GPU.

Every method of fastpeft/registry.py with a `compile_check` names a function (in
fastpeft/triton_path/samples.py) that drives its Triton host code with meta tensors; run inside
`launch.recording(launch.HOPPER, ...)`, the host code configures each launch for sm_90 and hands
it over instead of running it. Nothing here lists methods or kernels: both come from the registry
and from the modules of `fastpeft.kernels`, so a new method or kernel is checked without edits.

The recording lives in fastpeft.static.compile (the `fastpeft bench --suite static` library);
this module names what the sm_90 compile script (compile_sm90.py, run with Triton's interpreter
off) and the fast recording test (run under the interpreter: recording never runs a kernel, and
the host configuration depends only on the forced target, so both see the same launches) use,
and how tests start a Python that compiles for a GPU.
"""

import os
import subprocess
import sys
from pathlib import Path

from fastpeft.static.compile import (
    Launch,
    checked_methods,
    kernel_key,
    kernels_to_launch,
    not_launched,
    record,
    record_all,
)

ROOT = Path(__file__).resolve().parents[2]

__all__ = [
    "ROOT",
    "Launch",
    "checked_methods",
    "kernel_key",
    "kernels_to_launch",
    "not_launched",
    "record",
    "record_all",
    "run_uninterpreted",
]


def run_uninterpreted(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """`python *args` from the repository root with Triton's interpreter off and this checkout's
    fastpeft first on the path; output captured as text, exit status unchecked. Triton decides
    at kernel-definition time whether to interpret, and conftest.py turns it on in the tests'
    process, so compiling for a GPU needs a process of its own."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    command = [sys.executable, *args]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
