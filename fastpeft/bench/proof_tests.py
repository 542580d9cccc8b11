"""Part 1 of the proof suite: the `gpu` test tier in a subprocess, under a per-test timeout (where
pytest-timeout is installed) and a wall limit from the budget, with its junit XML and log in the
out folder and its pass / fail / skip counts.

At the wall limit pytest gets SIGINT first: it then stops after the running test and still writes
its junit XML with what ran. A crash (the segfault of the first GPU run) writes no XML: the
counts then come from the verbose log, whose last line names the test that was running.
"""

import importlib.util
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from .proof_budget import Deadline, Setting

XML, LOG = "gpu_tests.xml", "gpu_tests.log"
PER_TEST_S = 90  # one convergence test takes tens of seconds on an H200
_GRACE_S = 20  # after SIGINT: pytest's own clean-up and XML writing
# What a smoke run (no GPU) runs instead of the tier: one small GPU file, which skips itself
# without CUDA; enough to exercise the subprocess, the XML and the counting.
SMOKE_SELECTION = ("tests/gpu/test_ia3_gpu.py",)
_OUTCOMES = ("passed", "failed", "error", "skipped")


def repo_root() -> Path | None:
    """The source checkout holding tests/ (an editable install), or None (installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "tests" / "conftest.py").is_file() else None


def pytest_command(setting: Setting, xml: Path) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider"]
    command += [f"--junitxml={xml}", "-o", "junit_family=xunit1", "-o", "addopts="]
    if importlib.util.find_spec("pytest_timeout") is not None:
        command.append(f"--timeout={PER_TEST_S}")
    return command + (list(SMOKE_SELECTION) if setting.smoke else ["tests"])


def count_junit(xml: Path) -> dict:
    """Counts of each outcome and the failures' names and first message lines."""
    counts = dict.fromkeys(_OUTCOMES, 0)
    failures = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
                break
        counts[outcome] += 1
        if outcome in ("failed", "error"):
            message = (child.get("message") or "").strip().splitlines()
            name = f"{case.get('classname')}::{case.get('name')}"
            failures.append(f"{name}: {message[0] if message else outcome}"[:300])
    return {**counts, "failures": failures}


def count_log(log: Path) -> dict:
    """Counts from pytest's verbose lines ("path::test PASSED [ 1%]"), and the last test seen."""
    counts = dict.fromkeys(_OUTCOMES, 0)
    failures, last = [], None
    for line in log.read_text(errors="replace").splitlines():
        if "::" not in line:
            continue
        words = line.split()
        last = words[0]
        outcome = words[1].lower() if len(words) > 1 else ""
        if outcome in counts:
            counts[outcome] += 1
            if outcome in ("failed", "error"):
                failures.append(words[0])
    return {**counts, "failures": failures, "last_test_started": last}


def gpu_tests(setting: Setting, deadline: Deadline) -> dict:
    root = repo_root()
    if root is None:
        return {"status": "skipped", "reason": "no tests/ folder: fastpeft is not a checkout"}
    xml, log = setting.out / XML, setting.out / LOG
    xml.unlink(missing_ok=True)
    command = pytest_command(setting, xml)
    result: dict = {"command": " ".join(command[1:]), "per_test_timeout_s": None}
    if "--timeout" in " ".join(command):
        result["per_test_timeout_s"] = PER_TEST_S
    else:
        result["note"] = "pytest-timeout is not installed: no per-test timeout"
    if setting.smoke:
        result["selection"] = "smoke: one GPU test file only (it skips itself without CUDA)"
    wall = max(1.0, deadline.left() - _GRACE_S)
    with log.open("w") as handle:
        # Its own session: the signals below reach pytest and its children, nothing else.
        process = subprocess.Popen(
            command, cwd=root, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            result["returncode"] = process.wait(timeout=wall)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGINT)
            try:
                result["returncode"] = process.wait(timeout=_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                result["returncode"] = process.wait()
            result["status"] = "partial"
            result["reason"] = f"stopped at its wall limit of {wall:.0f} s (budget)"
    if xml.is_file():
        result.update(count_junit(xml), counted_from=XML)
    else:
        result.update(count_log(log), counted_from=LOG)
        result.setdefault("status", "partial")
        result.setdefault("reason", f"pytest wrote no XML (exit {result['returncode']}): crashed?")
    return result  # failed tests are results (in the counts), not a failed part
