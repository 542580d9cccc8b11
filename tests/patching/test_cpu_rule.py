"""The CPU rule: a patched LoRA or IA3 layer with backend "auto" on the CPU takes PEFT's own
forward where a one-time timing says it is faster, and says so (fastpeft/patching/cpu_rule.py)."""

import pytest
import torch

import fastpeft
from fastpeft import env, testing
from fastpeft.patching import cpu_rule

from .patch_checks import logits
from .test_ia3_patch import make_ia3_model


@pytest.fixture
def rule_on(monkeypatch):
    monkeypatch.setenv("FASTPEFT_CPU_RULE", "on")
    cpu_rule.clear()
    yield
    cpu_rule.clear()


def _model():
    return testing.make_lora_model(testing.tiny_llama(num_layers=1), dropout=0.1)


def _assert_each_call_took_one_of_the_two(report, model, calls_each: int) -> None:
    """Every patched module's calls went either the fused way or PEFT's (the rule's reason)."""
    for name, calls in report.usage(model).items():
        peft_won = calls["fallbacks"].get(cpu_rule.REASON, 0)
        assert calls["fused"] + peft_won == calls_each, name


def test_each_kind_is_timed_once_and_runs_the_faster_forward(rule_on):
    model = _model()
    batch = testing.causal_lm_batch(model)
    model.eval()
    want = logits(model, batch)
    report = fastpeft.patch(model)
    assert report.backend == "torch"
    got = logits(model, batch)
    timed = cpu_rule.decisions()
    assert timed and all(t["fused"] > 0 and t["peft"] > 0 for t in timed.values())
    logits(model, batch)
    assert cpu_rule.decisions() == timed  # decided once per kind
    _assert_each_call_took_one_of_the_two(report, model, calls_each=2)
    # Which path won is the machine's; both give PEFT's numbers.
    testing.assert_close_fp32(got, want, rtol=1e-5)


def test_timing_leaves_the_random_streams_and_the_output_as_they_were(rule_on):
    model = _model()
    batch = testing.causal_lm_batch(model)
    fastpeft.patch(model)
    model.train()
    torch.manual_seed(7)
    first = logits(model, batch)  # times every kind, then runs
    after_first = torch.get_rng_state()
    torch.manual_seed(7)
    again = logits(model, batch)  # decided: no timing
    assert torch.equal(torch.get_rng_state(), after_first)
    assert torch.equal(first, again)


def test_an_explicit_backend_is_never_second_guessed(rule_on):
    model = _model()
    batch = testing.causal_lm_batch(model)
    report = fastpeft.patch(model, backend="torch")
    logits(model, batch)
    assert cpu_rule.decisions() == {}
    assert all(calls["fallbacks"] == {} for calls in report.usage(model).values())


def test_ia3_layers_take_the_faster_forward_too(rule_on):
    model = make_ia3_model(testing.tiny_llama(num_layers=1))
    batch = testing.causal_lm_batch(model)
    model.eval()
    want = logits(model, batch)
    report = fastpeft.patch(model)
    assert {report.kinds[name] for name in report.patched} == {"IA3"}
    got = logits(model, batch)
    logits(model, batch)
    timed = {key: t for key, t in cpu_rule.decisions().items() if key[0] == "ia3"}
    # k/v (output scaling) and down_proj (input scaling): their own kinds, each timed once
    # (the last field: training or not).
    assert {key[-2] for key in timed} == {False, True} and {key[-1] for key in timed} == {False}
    _assert_each_call_took_one_of_the_two(report, model, calls_each=2)
    testing.assert_close_fp32(got, want, rtol=1e-5)


def test_training_calls_are_timed_with_their_backward_and_leave_grads_alone(rule_on):
    model = _model()
    batch = testing.causal_lm_batch(model)
    fastpeft.patch(model)
    model.train()
    out = model(**batch)  # times each kind's forward and backward, then runs
    assert all(p.grad is None for p in model.parameters())
    assert cpu_rule.decisions() and all(key[-1] for key in cpu_rule.decisions())
    out.loss.backward()
    assert any(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("FASTPEFT_CPU_RULE", "sometimes")
    with pytest.raises(ValueError, match="FASTPEFT_CPU_RULE"):
        env.cpu_rule()
