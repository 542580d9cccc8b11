"""Adapters on tiny real models: the fused path (single + gate/up pair) equals the eager modules."""

import copy

import pytest
import torch

import fastpeft
from fastpeft import testing
from fastpeft.ops import _counters
from fastpeft.patching import base
from fastpeft.testing import assert_close_fp32

FAMILIES = {
    "llava": (testing.tiny_llava, testing.llava_batch),
    "qwen2_vl": (testing.tiny_qwen2_vl, testing.qwen2_vl_batch),
    "qwen2_5_vl": (testing.tiny_qwen2_5_vl, testing.qwen2_vl_batch),
}


def _randomise(model):
    # bert init (std 0.02) is too gentle to expose a wrong kernel: use O(1) adapter outputs.
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "fastpeft_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("non_linearity", ["tanh", "gelu"])
def test_fused_adapters_equal_eager(family, backend, non_linearity):
    build, make_batch = FAMILIES[family]
    config = fastpeft.AdapterConfig(bottleneck_size=8, dropout=0.0, non_linearity=non_linearity)
    eager = fastpeft.add_adapters(build(), config, fused=False)
    _randomise(eager)
    fused = copy.deepcopy(eager)
    report = fastpeft.patch(fused, backend=backend)
    kinds = sorted(report.kinds[n] for n in report.patched)
    # Per layer: one gate/up pair (an MLP, which owns its two pre-adapters and computes them
    # itself) and the down_proj post-adapter, which runs the single fused op.
    assert kinds == ["adapter"] * 2 + ["adapter pair"] * 2 and not report.skipped
    assert str(report).startswith("fastpeft: patched 2 adapter pair + 2 adapter modules")
    batch = make_batch(eager)
    want = testing.forward_backward(eager, batch)
    exact = testing.fp64_forward_backward(eager, batch)
    _counters.reset()
    got = testing.forward_backward(fused, batch)
    assert _counters.launches[f"adapter_pair_fwd:{backend}"] == 2
    assert _counters.launches[f"adapter_fwd:{backend}"] == 2
    assert len(got) == 2 + 2 * 3 * 2  # logits, loss, down and up of 3 adapters in 2 layers
    testing.assert_all_within_reference_budget(got, want, exact)


def test_single_adapters_without_a_pair():
    config = fastpeft.AdapterConfig(
        bottleneck_size=8,
        dropout=0.0,
        pre_modules=("q_proj",),
        post_modules=(),
        parallel_modules=("o_proj",),
    )
    eager = fastpeft.add_adapters(testing.tiny_llama(), config, fused=False)
    _randomise(eager)
    fused = copy.deepcopy(eager)
    report = fastpeft.patch(fused, backend="torch")
    assert {report.kinds[n] for n in report.patched} == {"adapter"}
    batch = testing.causal_lm_batch(eager)
    want, got = testing.forward_backward(eager, batch), testing.forward_backward(fused, batch)
    testing.assert_all_within_reference_budget(
        got, want, testing.fp64_forward_backward(eager, batch)
    )


def test_add_adapters_fused_by_default_and_dropout_trains():
    model = fastpeft.add_adapters(testing.tiny_llava(), fastpeft.AdapterConfig(bottleneck_size=8))
    mlp = model.model.language_model.layers[0].mlp
    assert base.is_patched(mlp) and base.is_patched(mlp.down_proj.fastpeft_post_adapter)
    batch = testing.llava_batch(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert base.state_of(mlp).fused_calls == 5


def test_pair_falls_back_when_adapters_differ():
    model = fastpeft.add_adapters(
        testing.tiny_llama(num_layers=1), fastpeft.AdapterConfig(bottleneck_size=8, dropout=0.0)
    )
    mlp = model.model.layers[0].mlp
    mlp.up_proj.fastpeft_pre_adapter.scaling = 0.5
    batch = testing.causal_lm_batch(model)
    with torch.no_grad():
        got = model(**batch).logits
    assert base.state_of(mlp).fallbacks["gate/up adapters differ in non-linearity or scaling"] == 1
    fastpeft.unpatch(model)
    with torch.no_grad():
        assert_close_fp32(got, model(**batch).logits, name="fallback equals eager")


def test_non_square_parallel_adapter_runs_eager():
    config = fastpeft.AdapterConfig(
        bottleneck_size=8,
        dropout=0.0,
        pre_modules=(),
        post_modules=(),
        parallel_modules=("up_proj",),
    )
    model = fastpeft.add_adapters(testing.tiny_llama(num_layers=1), config)
    adapter = model.model.layers[0].mlp.up_proj.fastpeft_parallel_adapter
    assert adapter.up.weight.shape == (model.config.intermediate_size, 8)
    batch = testing.causal_lm_batch(model)
    with torch.no_grad():
        got = model(**batch).logits
    reason = "parallel adapter with in_features != out_features (the fused op is square)"
    assert base.state_of(adapter).fallbacks[reason] == 1
    fastpeft.unpatch(model)
    with torch.no_grad():
        assert torch.equal(got, model(**batch).logits)
