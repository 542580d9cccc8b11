"""Every Triton kernel launch the host code makes must compile for an H100 (sm_90), GPU or not.

The CPU tier runs the kernels through Triton's interpreter, which accepts programs that the GPU
compiler rejects and never allocates shared memory. compile_sm90.py has every registered method's
compile_check driver (fastpeft/triton_path/samples.py) drive the real host code at realistic
shapes, records the launches configured for Hopper and compiles each distinct one for sm_90 ahead
of time with Triton's bundled ptxas (fastpeft.static.compile), then inspects the code
(fastpeft.static.inspect_code): no GPU or driver is needed. It runs in a subprocess because
Triton decides at kernel-definition time whether to interpret (conftest.py turns the interpreter
on for this process). This test runs its representative subset (about 115 distinct compiles,
2-3 minutes on 2 cores); the full sweep (about 385, about 14 minutes on 2 cores) is

    python tests/kernels/compile_sm90.py --all
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .hopper_launches import ROOT, checked_methods, kernels_to_launch, run_uninterpreted

SCRIPT = Path(__file__).with_name("compile_sm90.py")
SKIP_EXIT = 77  # the script's "Triton cannot compile for sm_90 here" status


def _records(stdout: str) -> list[dict]:
    out = []
    for line in stdout.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _explain(proc: subprocess.CompletedProcess, records: list[dict], problem: str) -> str:
    """The failure message: what failed and why, then the script's summary and output tail."""
    lines = [f"{problem} ({SCRIPT.name} exited {proc.returncode})", ""]
    for r in records:
        if r.get("status") in ("fail", "smem"):
            lines.append(
                f"{r['status'].upper()} {r['kernel']} [{r['case']}] config={r['config']} "
                f"pointers={r['pointers']} num_warps={r['num_warps']} "
                f"num_stages={r['num_stages']} shared={r['shared_kib']} KiB"
            )
            lines.append(f"    {r.get('error', '')}")
    for r in records:
        if "summary" in r or ("error" in r and "kernel" not in r):
            lines.append(json.dumps(r, indent=1))
    lines += [
        "",
        f"reproduce: env -u TRITON_INTERPRET {Path(sys.executable).name} "
        f"{SCRIPT.relative_to(ROOT)}  (add --only 'ia3 fp32' etc. to narrow it)",
        "---- stdout (tail) ----",
        proc.stdout[-8000:],
        "---- stderr (tail) ----",
        proc.stderr[-8000:],
    ]
    return "\n".join(lines)


@pytest.mark.slow
def test_every_kernel_launch_compiles_for_sm90():
    proc = run_uninterpreted([str(SCRIPT)], timeout=1800)
    records = _records(proc.stdout)
    if proc.returncode == SKIP_EXIT:
        reasons = [r["skip"] for r in records if "skip" in r]
        pytest.skip(f"Triton cannot compile for sm_90 here: {reasons[0] if reasons else '?'}")
    assert proc.returncode == 0, _explain(proc, records, "sm_90 compile check failed")
    # The script checks both itself; asserting them here too guards against a script that
    # silently drove less (a method dropped from its plan, a kernel module it no longer scans).
    summary = next(r["summary"] for r in records if "summary" in r)
    silent = sorted({m.name for m in checked_methods()} - set(summary["methods"]))
    assert not silent, _explain(proc, records, f"methods that launched nothing: {silent}")
    uninspected = [
        r["kernel"] for r in records if r.get("status") == "ok" and not r["instructions"]
    ]
    assert not uninspected, _explain(proc, records, f"compiles without inspection: {uninspected}")
    compiled = {r["kernel"] for r in records if r.get("status") == "ok"}
    expected = {name for names in kernels_to_launch().values() for name in names}
    missing = sorted(expected - compiled)
    assert not missing, _explain(proc, records, f"kernels never launched and compiled: {missing}")
