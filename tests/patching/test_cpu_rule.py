"""The CPU rule: a patched LoRA or IA3 layer with backend "auto" on the CPU takes PEFT's own
forward where a one-time timing says it is faster, and says so (fastpeft/patching/cpu_rule.py)."""

import itertools

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


def _rigged(monkeypatch, fused: float, peft: float):
    """The rule's timing replaced by fixed seconds, so which path wins is known (each kind times
    the fused path, then PEFT's)."""
    seconds = itertools.cycle([fused, peft])
    monkeypatch.setattr(cpu_rule, "_best", lambda *a: next(seconds))


def test_a_peft_route_is_reused_until_the_call_or_the_setting_changes(rule_on, monkeypatch):
    _rigged(monkeypatch, fused=2.0, peft=1.0)  # PEFT's forward wins
    model = make_ia3_model(testing.tiny_llama(num_layers=1))
    layer = model.base_model.model.model.layers[0].self_attn.k_proj
    fastpeft.patch(model)
    state = fastpeft.patching.base.state_of(layer)
    x = torch.randn(5, layer.in_features)
    want = fastpeft.patching.base.original_forward(layer)(x)
    assert torch.equal(layer(x), want) and state.peft_route is not None
    checks = []
    monkeypatch.setattr(fastpeft.patching.ia3, "_adapter_reasons",
                        lambda m: checks.append(m) or [])  # fmt: skip
    assert torch.equal(layer(x), want) and checks == []  # the route, without the checks
    assert state.fallbacks[cpu_rule.REASON] == 2 and state.fused_calls == 0
    layer(torch.randn(6, layer.in_features))  # another shape: checked again
    assert len(checks) == 1
    layer(x)  # the route is the last routed call's: x's again
    model.eval()  # another kind (LoRA's dropout turns off): checked again
    layer(x)
    assert len(checks) == 3
    model.train()
    layer(x)
    with model.disable_adapter():  # an adapter state PEFT switches: checked, its own reason
        assert torch.equal(layer(x), layer.get_base_layer()(x))
    assert state.fallbacks["adapters disabled"] == 1
    layer(x)
    cpu_rule.clear()  # a new rule generation: checked (and timed) again
    checked = len(checks)
    layer(x)
    assert len(checks) == checked + 1
    monkeypatch.setenv("FASTPEFT_CPU_RULE", "off")  # the rule off: the fused path, not the route
    fused = layer(x)
    assert state.fused_calls == 1 and state.peft_route is None
    testing.assert_close_fp32(fused, want, rtol=1e-5)


def test_a_fused_win_leaves_no_route(rule_on, monkeypatch):
    _rigged(monkeypatch, fused=1.0, peft=2.0)
    model = make_ia3_model(testing.tiny_llama(num_layers=1))
    layer = model.base_model.model.model.layers[0].self_attn.k_proj
    fastpeft.patch(model)
    state = fastpeft.patching.base.state_of(layer)
    x = torch.randn(5, layer.in_features)
    layer(x)
    layer(x)
    assert state.peft_route is None and state.fused_calls == 2
