"""`fastpeft bench` in smoke mode (what CI runs to keep the command working), the correctness gate
that keeps a wrong provider from posting a number, and `fastpeft env`."""

import contextlib
import csv
import io
import json

import pytest
import torch

from fastpeft.__main__ import main
from fastpeft.bench import e2e, layers


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["bench", "--smoke", "--suite", "all", "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_smoke_run_writes_json_csv_per_suite_and_plots(smoke_run):
    out, _ = smoke_run
    result = json.loads((out / "bench_all_smoke.json").read_text())
    assert result["device"] and result["git_sha"] and result["versions"]["torch"]
    assert result["complete"] and result["suites_done"] == ["layers", "e2e", "spider"]
    assert result["peaks"]["copy_gbps"] > 0 and result["peaks"]["matmul_tflops"] > 0
    rows = result["rows"]
    assert {r["suite"] for r in rows} == {"layers", "e2e", "spider"}
    assert not [r for r in rows if "error" in r], "a provider disagreed with its baseline"
    layer = {(r["kind"], r["provider"], r["mode"]) for r in rows if r["suite"] == "layers"}
    expected = {"lora": ("base", "peft", "fastpeft"), "adapter": ("eager",)}
    expected["adapter_pair"] = ("eager", "fastpeft")
    for kind, providers in expected.items():
        assert {(kind, p, m) for p in providers for m in layers.MODES} <= layer
    timed = [r for r in rows if r["suite"] == "layers"]
    assert all(r["p20_ms"] <= r["median_ms"] <= r["p80_ms"] for r in timed)
    assert all(0 < r["pct_of_peak"] <= 100 and isinstance(r["noisy"], bool) for r in timed)
    e2e_rows = {(r["method"], r["provider"]): r for r in rows if r["suite"] == "e2e"}
    assert set(e2e_rows) == {("lora", "frozen"), ("lora", "peft"), ("lora", "fastpeft")}
    fused = e2e_rows[("lora", "fastpeft")]
    assert fused["tokens_per_s"] > 0 and "14 LoRA" in fused["patch"]
    assert fused["speedup_vs_peft_p20"] <= fused["speedup_vs_peft"] <= fused["speedup_vs_peft_p80"]
    assert fused["time_vs_frozen"] > 0 and len(fused["times_ms"]) == 3
    spider = {r["provider"] for r in rows if r["suite"] == "spider"}
    assert spider == {"spider_adamw", "adamw+spider", "fastpeft", "reference", "adamw",
                      "mask_adamw", "adamw+mask"}  # fmt: skip
    for suite in ("layers", "e2e", "spider"):
        with (out / f"bench_all_smoke_{suite}.csv").open() as handle:
            lines = list(csv.DictReader(handle))
        assert len(lines) == len([r for r in rows if r["suite"] == suite])
        assert all(line["git_sha"] == result["git_sha"] for line in lines)
        assert {line["suite"] for line in lines} == {suite} and "noisy" in lines[0]
    assert not (out / "bench_all_smoke.csv").exists()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["bench_all_smoke_e2e.png", "bench_all_smoke_layers_speedup.png"]
    assert all((out / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_names_carry_baselines_and_units_and_floors_show_a_bound(smoke_run):
    out, _ = smoke_run
    rows = json.loads((out / "bench_all_smoke.json").read_text())["rows"]
    keys = {k for r in rows for k in r}
    assert not {"speedup_vs_baseline", "peak_mb", "peak_extra_gib"} & keys
    assert {"speedup_vs_peft", "speedup_vs_eager", "speedup_vs_reference"} <= keys
    floors = [r for r in rows if r.get("role") == "floor"]
    assert {r["provider"] for r in floors} == {"base", "frozen"}
    for floor in floors:  # the floor bounds the others: no speedup of its own
        assert not [k for k in floor if k.startswith("speedup_vs_")]
        assert floor["speedup_bound_vs_peft"] > 0


def test_summary_is_printed_before_the_tables(smoke_run):
    _, printed = smoke_run
    assert printed.index("summary:") < printed.index("[layers]") < printed.index("[e2e]")
    summary = printed[printed.index("summary:") : printed.index("[layers]")]
    assert "layers lora" in summary and "fastpeft" in summary and "x vs peft [" in summary
    assert "<= " in summary and "floor" in summary  # the floor as a bound, not a speedup
    assert "x vs eager [" in summary  # adapters name their own baseline
    assert "e2e" in summary and "x vs reference [" in summary
    assert "speedup_vs_peft" in printed and "speedup_vs_baseline" not in printed
    assert "quick" not in printed.split("\n")[0] and "--smoke" in printed.split("\n")[0]


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
    infos = {"frozen": {"check_loss": 9.0}, "peft": {"check_loss": 5.0}}
    infos["fastpeft"] = {"check_loss": 5.01}
    assert "differs from peft" in e2e._loss_mismatches(args, infos)["fastpeft"]
    infos["fastpeft"] = {"check_loss": 5.0 + 1e-6}
    assert e2e._loss_mismatches(args, infos) == {}


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
    with pytest.raises(SystemExit):
        main(["bench", "--quick", "--full"])


def test_git_sha_marks_uncommitted_changes(monkeypatch):
    from fastpeft.bench import environment

    answers = {"rev-parse": "abc1234", "status": " M fastpeft/patch.py"}
    monkeypatch.setattr(environment, "_git", lambda *args: answers[args[0]])
    assert environment.git_sha() == "abc1234+dirty"
    answers["status"] = ""
    assert environment.git_sha() == "abc1234"
