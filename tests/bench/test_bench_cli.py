"""`fastpeft bench` in smoke mode (what CI runs to keep the command working), the correctness gate
that keeps a wrong provider from posting a number, and `fastpeft env`."""

import csv
import json

import pytest
import torch

from fastpeft.__main__ import main
from fastpeft.bench import e2e, layers


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "--smoke", "--suite", "all", "--out", str(out)]) == 0
    return out


def test_smoke_run_writes_json_csv_and_plots(smoke_run, capsys):
    result = json.loads((smoke_run / "bench_all_smoke.json").read_text())
    assert result["device"] and result["git_sha"] and result["versions"]["torch"]
    assert result["peaks"]["copy_gbps"] > 0 and result["peaks"]["matmul_tflops"] > 0
    rows = result["rows"]
    assert {r["suite"] for r in rows} == {"layers", "e2e", "spider"}
    assert not [r for r in rows if "error" in r], "a provider disagreed with its baseline"
    layer = {(r["kind"], r["provider"], r["mode"]) for r in rows if r["suite"] == "layers"}
    for kind, providers in (("lora", ("base", "peft", "fastpeft")), ("adapter", ("eager",))):
        assert {(kind, p, m) for p in providers for m in layers.MODES} <= layer
    timed = [r for r in rows if r["suite"] == "layers"]
    assert all(r["p20_ms"] <= r["median_ms"] <= r["p80_ms"] for r in timed)
    assert all(r["tflops"] > 0 and r["pct_of_peak"] > 0 for r in timed)
    e2e_rows = {(r["method"], r["provider"]): r for r in rows if r["suite"] == "e2e"}
    assert set(e2e_rows) == {("frozen", "frozen"), ("lora", "peft"), ("lora", "fastpeft")}
    fused = e2e_rows[("lora", "fastpeft")]
    assert fused["tokens_per_s"] > 0 and fused["peak_mb"] > 0
    assert fused["fraction_of_frozen_step"] > 0 and "14 LoRA" in fused["patch"]
    spider = {r["provider"] for r in rows if r["suite"] == "spider"}
    assert spider == {"fastpeft", "reference", "adamw"}
    with (smoke_run / "bench_all_smoke.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == len(rows) and all(line["git_sha"] == result["git_sha"] for line in lines)
    pngs = sorted(p.name for p in smoke_run.glob("*.png"))
    assert pngs == ["bench_all_smoke_e2e_memory.png", "bench_all_smoke_layers_speedup.png"]
    assert all((smoke_run / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


class _Wrong(torch.nn.Module):
    """A 'fast' provider that is 1% off."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * 1.01


def test_a_wrong_provider_posts_no_number(monkeypatch):
    build = layers.build_providers

    def with_wrong_fastpeft(*args, **kwargs):
        providers = build(*args, **kwargs)
        providers["fastpeft"] = _Wrong(providers["fastpeft"])
        return providers

    monkeypatch.setattr(layers, "build_providers", with_wrong_fastpeft)
    case = layers.LayerCase("lora", "q/o", 32, 64, 64, 8)
    rows = layers.bench_case(case, torch.float32, torch.device("cpu"), False, reps=2)
    wrong = [r for r in rows if r["provider"] == "fastpeft"]
    assert len(wrong) == 3 and all("error" in r and "median_ms" not in r for r in wrong)
    assert "output differs from peft" in wrong[0]["error"]
    assert all("median_ms" in r for r in rows if r["provider"] == "peft")


def test_e2e_rejects_a_provider_whose_loss_differs():
    args = e2e.settings(torch.device("cpu"), "float32", "smoke")
    baseline = {"provider": "peft", "check_loss": 5.0, "step_ms": 2.0, "tokens_per_s": 1.0}
    baseline.update(peak_mb=1.0, trainable=1, report="unpatched", tokens_per_step=8)
    wrong = {**baseline, "provider": "fastpeft", "check_loss": 5.01}
    row = e2e._row("lora", wrong, baseline, None, args)
    assert "error" in row and "tokens_per_s" not in row
    right = {**baseline, "provider": "fastpeft", "check_loss": 5.0 + 1e-6}
    assert e2e._row("lora", right, baseline, None, args)["speedup_vs_peft"] == 1.0


def test_env_reports_what_this_machine_can_run(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__
    assert "torch" in info["backends"]
    assert info["fastpeft._C"].startswith(("available", "missing"))
    assert "flash_attn" in info and "device" in info


def test_bad_arguments_exit_with_usage():
    with pytest.raises(SystemExit):
        main(["bench", "--suite", "everything"])
    with pytest.raises(SystemExit):
        main(["bench", "--quick", "--smoke"])
