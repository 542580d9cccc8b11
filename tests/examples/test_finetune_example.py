"""examples/finetune_mllm.py runs, and with dropout off its patched and unpatched runs agree."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "finetune_mllm.py"


def _example():
    spec = importlib.util.spec_from_file_location("finetune_mllm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "method, extra",
    [
        ("lora", []),
        ("adapter", ["--location", "mlp", "--no-connector"]),
        ("prefix", ["--lr", "1e-3"]),  # Paper A's 1e-5 moves too little in three steps
    ],
)
def test_patched_and_unpatched_runs_agree(method, extra, capsys):
    argv = ["--size", "tiny", "--steps", "3", "--batch-size", "2", "--dropout-off"]
    results = _example().main([*argv, "--method", method, *extra])
    plain, fused = results["unpatched"], results["patched"]
    assert len(plain["losses"]) == 3
    for a, b in zip(plain["losses"], fused["losses"], strict=True):
        assert abs(a - b) <= 1e-4 * abs(a)
    assert plain["losses"][-1] < plain["losses"][0], "three steps should already learn"
    assert fused["tokens_per_s"] > 0 and fused["peak_mb"] > 0
    out = capsys.readouterr().out
    assert "tokens/s" in out and "peak memory" in out


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        _example().parse_args(["--method", "prefix", "--location", "mlp"])
    with pytest.raises(SystemExit):
        _example().parse_args(["--steps", "1"])
