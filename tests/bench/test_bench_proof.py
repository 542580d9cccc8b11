"""`fastpeft bench --suite proof` (the GPU proof kit): the smoke run writes every part, marked
smoke; the budget skips later parts and says so; the out folder stays within what a device run
returns; `benchmarks/gpu_proof.sh` stops at once without CUDA."""

import contextlib
import io
import json
import os
import subprocess
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from fastpeft.__main__ import _parser, main
from fastpeft.bench import proof, proof_out, proof_tests
from fastpeft.bench.proof_budget import Deadline, Part, Setting, run_parts
from fastpeft.bench.proof_layers import proof_cases
from fastpeft.bench.proof_parts import e2e_layers
from fastpeft.bench.proof_targets import judge

ROOT = Path(__file__).resolve().parents[2]
PARTS = ["gpu_tests", "ceilings", "layers", "spider", "e2e"]


def _within_device_limits(out: Path) -> None:
    files = proof_out.files_under(out)
    assert len(files) <= proof_out.MAX_FILES, files
    assert all(p.parent == out for p in files), files


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("proof") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["bench", "--suite", "proof", "--smoke", "--out", str(out)]) == 0
    return out, json.loads((out / "proof.json").read_text())


def test_smoke_runs_every_part_and_marks_it_smoke(smoke):
    out, result = smoke
    assert result["smoke"] is True and result["complete"] is True
    assert list(result["parts"]) == PARTS
    for name, part in result["parts"].items():
        assert part["status"] == "done" and part["smoke"] is True, (name, part)
    tests = result["parts"]["gpu_tests"]
    assert tests["skipped"] > 0 and tests["failed"] == tests["error"] == 0  # no CUDA: skipped
    assert result["parts"]["ceilings"]["peaks"]["copy_gbps"] > 0
    layer_rows = result["parts"]["layers"]["rows"]
    assert {r["kind"] for r in layer_rows} == {"lora", "ia3", "adapter"}
    fast = [r for r in layer_rows if r["provider"] == "fastpeft"]
    assert fast and all(r["kernels"] and r["p20_ms"] <= r["median_ms"] <= r["p80_ms"] for r in fast)
    # The references' kernels too (on a GPU, cuBLAS's names: its tiles and clusters).
    references = [r for r in layer_rows if r["provider"] in (r["baseline"], "base")]
    assert {r["kind"] for r in references} == {"lora", "ia3", "adapter"}
    assert all(r["kernels"] for r in references)
    assert not any("kernels" in r for r in layer_rows
                   if r["provider"] not in ("fastpeft", r["baseline"], "base"))  # fmt: skip
    assert "error" not in str(layer_rows)
    spider = result["parts"]["spider"]
    assert spider["host_sync_check"].startswith("not run")  # CPU: the mode is CUDA-only
    assert {r["provider"] for r in spider["rows"]} == {"fastpeft", "spider_adamw", "adamw"}
    e2e = {r["provider"]: r for r in result["parts"]["e2e"]["rows"]}
    assert {"frozen", "peft", "fastpeft"} <= set(e2e) and e2e["fastpeft"]["tokens_per_s"] > 0
    verdicts = {t["target"]: t["verdict"] for t in result["targets"]}
    assert len(verdicts) == 9 and set(verdicts.values()) <= {"met", "missed", "not measured"}
    _within_device_limits(out)


def test_smoke_summary_shows_targets_parts_and_smoke(smoke):
    out, result = smoke
    summary = (out / "summary.md").read_text()
    assert "SMOKE RUN" in summary
    for target in result["targets"]:
        assert target["target"] in summary
    assert summary.count("(smoke)") == len(result["targets"])
    for name in PARTS:
        assert f"| {name} | done |" in summary
    assert "## layers" in summary and "## SPIDER step" in summary and "## e2e" in summary


def test_tiny_budget_skips_the_parts_and_says_so(tmp_path):
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        main(["bench", "--suite", "proof", "--smoke", "--budget", "0.2", "--out", str(out)])
    result = json.loads((out / "proof.json").read_text())
    assert [p["status"] for p in result["parts"].values()] == ["skipped"] * 5
    assert all("out of budget" in p["reason"] for p in result["parts"].values())
    assert {t["verdict"] for t in result["targets"]} == {"not measured"}
    summary = (out / "summary.md").read_text()
    assert summary.count("| skipped |") == 5 and "out of budget" in summary


def test_budget_rolls_unused_time_over_and_skips_later_parts():
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    ran = []

    def taking(seconds, fail=False):
        def part(setting, deadline):
            ran.append(round(deadline.seconds, 1))
            now[0] += seconds
            if fail:
                raise RuntimeError("broken")
            return {"rows": []}

        return part

    parts = [
        (Part("a", 1, 10), taking(1)),  # limit 100 / 4; uses 1
        (Part("b", 1, 10), taking(60, fail=True)),  # 99 / 3: a's unused time rolled over
        (Part("c", 1, 30), taking(1)),  # 39 / 2 = 19.5 < 30: skipped
        (Part("d", 1, 10), taking(1)),  # all that is left
    ]
    setting = Setting(torch.device("cpu"), "float32", True, Path("."))
    recorded = []
    entries = run_parts(parts, setting, Deadline(100, clock), recorded.append)
    assert entries == recorded
    assert [e["status"] for e in entries] == ["done", "failed", "skipped", "done"]
    assert ran == [25.0, 33.0, 39.0]
    assert entries[2]["limit_s"] == 19.5
    assert "broken" in entries[1]["reason"] and "out of budget" in entries[2]["reason"]


def test_bundle_keeps_eight_top_level_files_and_archives_the_rest(tmp_path):
    names = [f"f{i}.txt" for i in range(10)] + ["a/b/c/deep.txt", "a/x.txt"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    archived = proof_out.bundle(tmp_path, keep=("f9.txt", "f8.txt"))
    _within_device_limits(tmp_path)
    kept = {p.name for p in tmp_path.iterdir()}
    assert {"f9.txt", "f8.txt", proof_out.ARCHIVE} <= kept and len(kept) == 8
    with tarfile.open(tmp_path / proof_out.ARCHIVE) as tar:
        assert sorted(tar.getnames()) == sorted(archived)
    assert set(archived) | kept - {proof_out.ARCHIVE} == set(names)
    assert proof_out.bundle(tmp_path, keep=()) == []  # within the limits: nothing to do


def test_junit_and_verbose_log_counts(tmp_path):
    xml = tmp_path / "t.xml"
    suite = ET.Element("testsuite")
    for name, child in (("a", None), ("b", "failure"), ("c", "skipped"), ("d", "error")):
        case = ET.SubElement(suite, "testcase", classname="tests.gpu.x", name=name)
        if child:
            ET.SubElement(case, child, message=f"{name} went wrong\nmore")
    ET.ElementTree(suite).write(xml)
    counts = proof_tests.count_junit(xml)
    assert (counts["passed"], counts["failed"], counts["skipped"], counts["error"]) == (1, 1, 1, 1)
    assert counts["failures"][0] == "tests.gpu.x::b: b went wrong"
    log = tmp_path / "t.log"
    log.write_text("tests/a.py::t1 PASSED [ 50%]\ntests/a.py::t2 FAILED [100%]\ntests/a.py::t3\n")
    counts = proof_tests.count_log(log)
    assert counts["passed"] == counts["failed"] == 1 and counts["last_test_started"].endswith("t3")


def test_cases_put_the_headline_first():
    cases = proof_cases(8192)
    first = cases[0]
    assert first.layer.kind == "lora" and (first.layer.K, first.layer.N, first.layer.r) == (
        4096,
        4096,
        16,
    )
    assert first.weights == "float32" and first.dropout == 0.05
    kinds = [c.layer.kind for c in cases[:12]]
    assert kinds == ["lora"] * 8 + ["ia3"] * 2 + ["adapter"] * 2
    assert {c.layer.r for c in cases[4:8]} == {128}
    assert len({c.name() for c in cases}) == len(cases)  # rows group by name: no two alike


def test_targets_judge_worst_case_and_name_the_kernel():
    row = {"provider": "fastpeft", "mode": "full", "kind": "lora", "r": 16, "K": 4096,
           "N": 4096, "weights": "float32", "dropout": 0.05, "times_ms": [1.0], "case": "h",
           "time_vs_base": 1.2, "speedup_vs_peft": 1.5,
           "kernels": [{"kernel": "_lora_fwd", "ms": 1.0, "share": 0.9}]}  # fmt: skip
    targets = {t["target"]: t for t in judge({"layers": {"rows": [row]}})}
    frozen = targets["LoRA r16 4096² fwd+bwd vs frozen linear"]
    assert frozen["verdict"] == "missed" and "_lora_fwd" in frozen["kernels"]
    assert targets["LoRA r16 4096² fwd+bwd vs PEFT"]["verdict"] == "met"
    assert targets["SPIDER step vs one fused AdamW step"]["verdict"] == "not measured"


def test_e2e_layers_fit_the_limit():
    assert e2e_layers(1000) == 32 and e2e_layers(0) == 2 and 2 < e2e_layers(60) < 32


def test_out_defaults_to_OUT_and_proof_needs_cuda_or_smoke(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("OUT", str(tmp_path / "o"))
    assert _parser().parse_args(["bench"]).out == tmp_path / "o"
    assert _parser().parse_args(["bench"]).budget == proof.DEFAULT_BUDGET_S
    if torch.cuda.is_available():
        return
    for extra in ([], ["--quick"]):
        with pytest.raises(SystemExit):
            main(["bench", "--suite", "proof", *extra])
        assert "--smoke" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_gpu_proof_script_stops_early_without_cuda(tmp_path):
    out = tmp_path / "proof"
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_proof.sh")],
        env={**os.environ, "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "no CUDA device" in done.stderr
    assert not out.exists()  # nothing installed, nothing written
    assert time.monotonic() - started < 60


def test_adapter_cases_on_a_gpu_also_time_the_wide_tile_preset():
    # Built as on a GPU (the calls only run when timed): the adapters' "wide" backward tiles
    # get a row of their own, each call run under that preset; other kinds and CPUs get none.
    from fastpeft.bench.proof_layers import preset_calls
    from fastpeft.triton_path import adapter

    seen = []
    calls = preset_calls("adapter_pair", lambda: lambda: seen.append(adapter._preset),
                         torch.device("cuda"))  # fmt: skip
    assert set(calls) == {"fastpeft-wide"}
    calls["fastpeft-wide"]()
    assert seen == ["wide"] and adapter._preset is None  # the preset ends with the call
    assert preset_calls("lora", lambda: None, torch.device("cuda")) == {}
    assert preset_calls("adapter", lambda: None, torch.device("cpu")) == {}


def test_a_preset_that_fails_costs_its_own_row_not_the_part():
    from fastpeft.bench.proof_layers import _runnable

    def broken():
        raise RuntimeError("out of resources: shared memory")

    failed: dict = {}
    ok = _runnable({"fastpeft-wide": broken, "fine": lambda: None}, failed, torch.device("cpu"))
    assert set(ok) == {"fine"}
    assert failed == {"fastpeft-wide": "RuntimeError: out of resources: shared memory"}
