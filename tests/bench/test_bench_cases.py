"""The bench's case modules, found through the registry: every method with a `bench` entry has
one, with cases at every level; the layers suite runs one module's cases per method, names them
as before, and checks the gate/up adapter pair's fused provider against the eager adapters
before timing it."""

import pytest
import torch

import fastpeft.functional
from fastpeft import registry
from fastpeft.bench import cases, layers, plan, suites
from fastpeft.bench.cases.layer_case import LayerCase, Setup
from fastpeft.bench.cli import SUITES
from fastpeft.bench.proof_layers import proof_cases
from fastpeft.bench.proof_targets import judge
from fastpeft.patching import base

CPU = torch.device("cpu")
BENCHED = [m for m in registry.METHODS.values() if m.bench is not None]
PAIR = LayerCase("adapter_pair", "gate/up pre", 32, 64, 64, 8)


@pytest.mark.parametrize("level", ["smoke", "quick"])
@pytest.mark.parametrize("method", BENCHED, ids=lambda m: m.name)
def test_every_benched_method_has_a_case_module_with_cases(method, level):
    module = registry.load(method.bench)
    assert module.KIND == method.name and module.SUITE in SUITES
    assert module.cases(CPU, level)
    assert isinstance(module.proof_targets({}), list)


def test_the_layers_suite_runs_every_layers_method_in_registry_order():
    kinds = [c.kind for c in plan.layer_cases(CPU, "smoke")]  # smoke: the first case of each
    assert kinds == [m.KIND for m in cases.modules("layers")]
    assert kinds == ["lora", "ia3", "adapter_pair", "adapter"]
    pairs = [c.name() for c in plan.layer_cases(CPU, "quick") if c.kind == "adapter_pair"]
    assert pairs == [f"adapter_pair gate/up pre M=512 512->512 H={H}" for H in (8, 32)]
    assert [m.KIND for m in cases.modules("spider")] == ["spider"]


def test_case_names_and_targets_are_what_they_were():
    assert LayerCase("lora", "q/o", 512, 512, 512, 16).name() == "lora q/o M=512 512->512 r=16"
    ia3 = LayerCase("ia3", "down", 512, 1376, 512, feedforward=True)
    assert ia3.name() == "ia3 down M=512 1376->512 (input scale)"
    assert LayerCase("adapter", "post", 64, 128, 128, 2).name() == "adapter post M=64 128->128 H=2"
    names = [c.name() for c in proof_cases(8192)]
    assert names[0] == "lora q/o M=8192 4096->4096 r=16 fp32 weights, dropout 0.05"
    assert names[8:12] == [
        "ia3 q/o M=8192 4096->4096",
        "ia3 down M=8192 11008->4096 (input scale)",
        "adapter post M=8192 4096->4096 H=256 fp32 weights",
        "adapter post M=8192 4096->4096 H=256 bf16 weights",
    ]
    assert names[-1] == "ia3 gate/up M=8192 4096->11008" and len(names) == 29
    assert [t["target"] for t in judge({})] == [
        "LoRA r16 4096² fwd+bwd vs frozen linear",
        "LoRA r16 4096² fwd+bwd vs PEFT",
        "IA3 fwd+bwd vs frozen linear (worst case)",
        "adapter fwd+bwd vs eager (worst case)",
        "SPIDER step vs one fused AdamW step",
        "SpiderAdamW step vs one fused AdamW step",
        "e2e LoRA tokens/s vs PEFT",
        "e2e LoRA peak memory vs PEFT",
        "e2e every method vs the frozen step (worst)",
    ]


def test_the_pair_provider_runs_the_fused_pair_and_matches_eager():
    providers = layers.build_providers(PAIR, torch.float32, CPU, Setup())
    assert list(providers) == ["eager", "fastpeft"]
    fused = providers["fastpeft"]
    assert base.is_patched(fused) and base.state_of(fused).method == "adapter_pair"
    assert layers._check(providers, "eager", torch.randn(32, 64), torch.float32) == {}
    state = base.state_of(fused)
    assert state.fused_calls == 1 and not state.fallbacks  # the pair op ran, not the eager path
    rows = layers.bench_case(PAIR, torch.float32, CPU, False, reps=2)
    assert {(r["provider"], r["baseline"]) for r in rows} == {
        ("eager", "eager"),
        ("fastpeft", "eager"),
    }
    assert all("median_ms" in r and "error" not in r for r in rows)
    suites.finish_layers(rows, {"matmul_tflops": 1.0, "copy_gbps": 10.0}, "float32")
    assert all(r["tflops"] > 0 for r in rows)
    assert all("speedup_vs_eager" in r for r in rows if r["provider"] == "fastpeft")


def test_a_wrong_pair_op_posts_no_number(monkeypatch):
    real = fastpeft.functional.adapter_pair

    def one_percent_off(*args, **kwargs):
        u, v = real(*args, **kwargs)
        return u * 1.01, v

    monkeypatch.setattr(fastpeft.functional, "adapter_pair", one_percent_off)
    rows = layers.bench_case(PAIR, torch.float32, CPU, False, reps=2)
    wrong = [r for r in rows if r["provider"] == "fastpeft"]
    assert len(wrong) == 3 and all("median_ms" not in r for r in wrong)
    assert "output differs from eager" in wrong[0]["error"]
    assert all("median_ms" in r for r in rows if r["provider"] == "eager")
