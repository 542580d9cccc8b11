"""`fastpeft --version`, defaults in every `--help`, arguments checked before any work, the CPU's
default level said out loud, and partial results kept when a run is interrupted."""

import argparse
import json

import pytest
import torch

import fastpeft
from fastpeft.__main__ import _parser, main
from fastpeft.bench import cli, plan
from fastpeft.bench.validate import check_out

_PEAKS = {"copy_gbps": 10.0, "copy_gbps_median": 9.0, "matmul_tflops": 0.1}
_PEAKS.update(matmul_tflops_median=0.09, matmul_dtype="float32", repetitions=30)


@pytest.fixture
def no_work(monkeypatch):
    """Any measurement fails the test: argument errors must come first."""

    def work(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    for name in ("measured_peaks", "run_layers", "run_e2e", "run_spider"):
        monkeypatch.setattr(cli, name, work)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastpeft {fastpeft.__version__}"


def test_every_flag_of_every_subcommand_states_its_default():
    parser = _parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subcommands.choices) == {"demo", "bench", "env"}
    for name, sub in subcommands.choices.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = formatter._expand_help(action) if action.help else ""
            assert "default" in text, f"fastpeft {name} {action.option_strings}: {text!r}"


def test_missing_parent_of_out_is_an_error_before_any_work(tmp_path, no_work, capsys):
    out = tmp_path / "missing" / "dir" / "x"
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--smoke", "--out", str(out)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "fastpeft bench: error: --out" in err and "does not exist" in err
    assert not (tmp_path / "missing").exists()  # nothing created


def test_out_that_is_a_file_is_an_error(tmp_path, no_work, capsys):
    existing = tmp_path / "results.json"
    existing.write_text("{}")
    with pytest.raises(SystemExit):
        main(["bench", "--smoke", "--out", str(existing)])
    assert "--out" in capsys.readouterr().err and "not a directory" in check_out(existing)
    with pytest.raises(ValueError, match="--out"):
        cli.run_bench("all", "smoke", existing, None, None, None)


def test_bad_device_and_dtype_name_the_argument(tmp_path, no_work, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--device", "tpu", "--out", str(tmp_path)])
    assert "--device 'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device 'cuda'"):
            cli.run_bench("all", "smoke", tmp_path, None, "cuda", None)
    with pytest.raises(ValueError, match="--dtype 'int8'"):
        cli.run_bench("all", "smoke", tmp_path, "int8", "cpu", None)
    with pytest.raises(ValueError, match="--suite 'everything'"):
        cli.run_bench("everything", "smoke", tmp_path, None, "cpu", None)


def test_a_cpu_defaults_to_quick_shapes_and_says_what_will_run(tmp_path, monkeypatch, capsys):
    assert plan.resolve_level(None, torch.device("cpu"))[0] == "quick"
    assert plan.resolve_level(None, torch.device("cuda")) == ("full", None)
    assert plan.resolve_level("full", torch.device("cpu")) == ("full", None)
    monkeypatch.setattr(cli, "measured_peaks", lambda *a, **k: dict(_PEAKS))
    monkeypatch.setattr(cli, "run_spider", lambda *a, **k: [])
    out = tmp_path / "new"
    assert main(["bench", "--suite", "spider", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("fastpeft bench --quick on ")
    assert "no GPU" in printed[1] and "--full" in printed[1]
    assert printed[2].strip().startswith("spider: ") and "rough time:" in printed[3]
    assert (out / "bench_spider_quick.json").exists()  # the new last component is created


def test_an_interrupted_run_keeps_the_suites_it_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "measured_peaks", lambda *a, **k: dict(_PEAKS))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_e2e", interrupted)
    assert main(["bench", "--smoke", "--device", "cpu", "--out", str(tmp_path)]) == 130
    result = json.loads((tmp_path / "bench_all_smoke.json").read_text())
    assert result["suites_done"] == ["layers"] and result["complete"] is False
    assert {r["suite"] for r in result["rows"]} == {"layers"}
    assert (tmp_path / "bench_all_smoke_layers.csv").exists()
    assert not (tmp_path / "bench_all_smoke_e2e.csv").exists()


def test_an_interrupted_suite_keeps_the_cases_it_finished(tmp_path, monkeypatch):
    from fastpeft.bench import layers

    monkeypatch.setattr(cli, "measured_peaks", lambda *a, **k: dict(_PEAKS))
    real, calls = layers.bench_case, []

    def second_case_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(layers, "bench_case", second_case_interrupted)
    argv = ["bench", "--smoke", "--suite", "layers", "--device", "cpu", "--out", str(tmp_path)]
    assert main(argv) == 130
    result = json.loads((tmp_path / "bench_layers_smoke.json").read_text())
    assert result["suite_running"] == "layers" and result["suites_done"] == []
    assert not result["complete"]
    rows = result["rows"]
    assert {r["kind"] for r in rows} == {"lora"} and len(rows) == 9  # 3 providers x 3 modes
    assert [e["provider"] for e in result["summary"]] == ["base", "fastpeft"]
