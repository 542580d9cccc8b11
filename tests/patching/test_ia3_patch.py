"""Patched vs unpatched PEFT IA3 on tiny real HF models (Paper A's targets: k_proj, v_proj and
down_proj, down_proj as the feed-forward module), eligibility reasons, per-call fallbacks, save."""

import pytest
import torch
import torch.nn as nn

import fastpeft
from fastpeft import testing
from fastpeft.ops import _counters
from fastpeft.patching import base
from fastpeft.testing import assert_close_fp32

from . import patch_checks
from .patch_checks import logits

FAMILIES = {
    "llama": (testing.tiny_llama, testing.causal_lm_batch),
    "llava": (testing.tiny_llava, testing.llava_batch),
    "qwen2_vl": (testing.tiny_qwen2_vl, testing.qwen2_vl_batch),
}
SUFFIXES = ("k_proj", "v_proj", "down_proj")


def paper_a_targets(model) -> tuple[list[str], list[str]]:
    """(target_modules, feedforward_modules): the language model's k/v/down projections."""
    targets = [n for n in testing.language_model_lora_targets(model) if n.endswith(SUFFIXES)]
    return targets, [n for n in targets if n.endswith("down_proj")]


def make_ia3_model(model, autocast_adapter_dtype=True, seed=0, **ia3_kwargs):
    """Wrap `model` with IA3 on Paper A's targets; every vector randomised around 1 (PEFT's init
    is all ones, under which a kernel that ignores the vector passes)."""
    from peft import IA3Config, get_peft_model

    targets, feedforward = paper_a_targets(model)
    ia3_kwargs.setdefault("target_modules", targets)
    ia3_kwargs.setdefault("feedforward_modules", feedforward)
    peft_model = get_peft_model(
        model, IA3Config(**ia3_kwargs), autocast_adapter_dtype=autocast_adapter_dtype
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if ".ia3_l." in name:
                param.copy_(1.0 + 0.3 * torch.randn(param.shape, generator=g))
    return peft_model


def _ia3_names(model) -> list[str]:
    """Full names, inside the PeftModel, of the layers IA3 wraps."""
    return ["base_model.model." + name for name in paper_a_targets(model)[0]]


@pytest.mark.parametrize("backend", ["triton", "hybrid", "torch"])
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_patched_equals_unpatched_fp32(family, backend):
    build, make_batch = FAMILIES[family]
    model = make_ia3_model(build())
    batch = make_batch(model)
    want = testing.forward_backward(model, batch)
    exact = testing.fp64_forward_backward(model, batch)

    report = fastpeft.patch(model, backend=backend)
    expected = _ia3_names(model)
    assert len(expected) == 6 and sorted(report.patched) == sorted(expected)
    assert not report.skipped
    assert str(report) == f"fastpeft: patched 6 IA3 modules (backend: {backend}); skipped 0"
    _counters.reset()
    got = testing.forward_backward(model, batch)
    # Proof the fused path ran: one forward and one backward launch per IA3 module.
    assert _counters.launches[f"ia3_fwd:{backend}"] == len(expected)
    assert _counters.launches[f"ia3_bwd:{backend}"] == len(expected)
    assert all(base.state_of(m).fused_calls == 1 for n, m in model.named_modules() if n in expected)

    grads = [name for name in got if name.startswith("grad ")]
    assert len(grads) == len(expected) and all(".ia3_l." in name for name in grads)
    testing.assert_all_within_reference_budget(got, want, exact)


@pytest.mark.parametrize("backend", ["triton", "hybrid", "torch"])
@pytest.mark.parametrize("autocast_adapter_dtype", [True, False], ids=["fp32-l", "fp16-l"])
def test_fp16_base_matches_peft_within_budget(backend, autocast_adapter_dtype):
    # PEFT's default on a 16-bit base keeps fp32 vectors; the other regime has fp16 vectors.
    model = make_ia3_model(
        testing.tiny_llava(dtype=torch.float16), autocast_adapter_dtype=autocast_adapter_dtype
    )
    batch = testing.llava_batch(model)
    peft16 = testing.forward_backward(model, batch)
    fastpeft.patch(model, backend=backend)
    fused = testing.forward_backward(model, batch)
    fastpeft.unpatch(model)
    model32 = make_ia3_model(testing.tiny_llava())
    model32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    batch32 = {k: v.float() if v.is_floating_point() else v for k, v in batch.items()}
    ref32 = testing.forward_backward(model32, batch32)
    testing.assert_within_dtype_budget(
        fused["logits"], ref32["logits"], peft16["logits"], name="logits"
    )
    for name in [n for n in peft16 if n.startswith("grad ")]:
        assert fused[name].dtype == peft16[name].dtype
        testing.assert_within_dtype_budget(
            fused[name].float(), ref32[name], peft16[name].float(), floor=2e-3, name=name
        )


@pytest.mark.parametrize("backend", ["triton", "hybrid", "torch"])
def test_training_steps_follow_peft(backend):
    def train(patched, fp64=False):
        model = make_ia3_model(testing.tiny_llava(num_layers=1))
        if patched:
            fastpeft.patch(model, backend=backend)
        if fp64:
            model.to(torch.float64)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-2)
        losses = []
        for step in range(4):
            batch = testing.llava_batch(model, seed=step)
            loss = model(**(testing.fp64_batch(batch) if fp64 else batch)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.detach())
        trained = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        return torch.stack(losses), trained

    (got_losses, got), (want_losses, want) = train(True), train(False)
    exact_losses, exact = train(False, fp64=True)
    testing.assert_within_reference_budget(got_losses, want_losses, exact_losses, name="losses")
    testing.assert_all_within_reference_budget(got, want, exact, what="param", norm="rms")


# --------------------------------------------------------------------------------------------
# Fallbacks and eligibility
# --------------------------------------------------------------------------------------------


def _ia3_llama(**kwargs):
    return make_ia3_model(testing.tiny_llama(num_layers=1), **kwargs)


def _layer(model, which="k_proj"):
    layer = model.base_model.model.model.layers[0]
    return layer.mlp.down_proj if which == "down_proj" else getattr(layer.self_attn, which)


def test_per_call_fallbacks_give_peft_numbers():
    model = _ia3_llama().eval()
    batch = testing.causal_lm_batch(model)
    with model.disable_adapter():
        want_disabled = logits(model, batch)
    want = logits(model, batch)
    report = fastpeft.patch(model, backend="torch")
    assert len(report.patched) == 3
    states = [base.state_of(_layer(model, w)) for w in SUFFIXES]

    with model.disable_adapter():
        assert_close_fp32(logits(model, batch), want_disabled, name="disabled")
    assert all(s.fallbacks["adapters disabled"] == 1 for s in states)

    model.merge_adapter()
    assert_close_fp32(logits(model, batch), want, rtol=1e-4, name="merged")
    assert all(s.fallbacks["adapters merged"] == 1 for s in states)
    model.unmerge_adapter()

    fused_before = [s.fused_calls for s in states]
    assert_close_fp32(logits(model, batch), want, rtol=1e-4, name="fused again")
    assert [s.fused_calls for s in states] == [n + 1 for n in fused_before]


def test_autocast_and_dtype_mismatch_fall_back_to_peft():
    model = _ia3_llama()
    patch_checks.check_autocast_and_dtype_mismatch_fall_back(model, _layer(model))


def test_several_active_adapters_are_skipped():
    from peft import IA3Config

    model = _ia3_llama()
    targets, feedforward = paper_a_targets(model)
    model.add_adapter("second", IA3Config(target_modules=targets, feedforward_modules=feedforward))
    model.base_model.set_adapter(["default", "second"])
    report = fastpeft.patch(model, backend="torch")
    assert not report.patched and len(report.skipped) == 3
    assert all(
        rs == ["2 active adapters (default, second); the fused path takes one"]
        for rs in report.skipped.values()
    )


def test_trainable_base_weight_is_skipped():
    model = _ia3_llama()
    _layer(model, "v_proj").base_layer.weight.requires_grad_(True)
    report = fastpeft.patch(model, backend="torch")
    (name,) = report.skipped
    assert name.endswith("v_proj") and len(report.patched) == 2
    assert any("trainable" in r for r in report.skipped[name])
    with pytest.raises(ValueError, match="base layer weight or bias is trainable"):
        fastpeft.patch(model, strict=True)


def test_non_linear_base_layer_is_skipped():
    llama = patch_checks.llama_with_quantised_down_proj()
    report = fastpeft.patch(make_ia3_model(llama), backend="torch")
    (name,) = report.skipped
    assert name.endswith("mlp.down_proj")
    assert report.skipped[name] == [
        "base layer is QuantisedLinear, not torch.nn.Linear (quantised or custom)"
    ]


def test_conv_and_conv1d_ia3_layers_are_listed_with_reasons():
    from peft import IA3Config, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64))
    config = IA3Config(target_modules=["c_attn", "c_proj"], feedforward_modules=["c_proj"])
    report = fastpeft.patch(get_peft_model(gpt2, config), backend="torch")
    assert not report.patched and len(report.skipped) == 3
    for reasons in report.skipped.values():
        assert reasons == [
            "base layer is Conv1D, not torch.nn.Linear (quantised or custom)",
            "fan_in_fan_out=True (Conv1D-style weight)",
        ]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(4, 2)

    net = get_peft_model(Net(), IA3Config(target_modules=["conv", "head"], feedforward_modules=[]))
    report = fastpeft.patch(net, backend="torch")
    assert report.patched == ["base_model.model.head"]
    assert report.skipped == {
        "base_model.model.conv": ["IA3 layer type Conv2d is not supported (only Linear)"]
    }
    assert str(report).startswith("fastpeft: patched 1 IA3 modules (backend: torch); skipped 1")


def test_patch_is_idempotent_and_unpatch_restores():
    model = _ia3_llama()
    layer = _layer(model, "down_proj")
    patch_checks.check_patch_is_idempotent_and_unpatch_restores(model, layer, 3, "IA3")


def test_save_pretrained_state_dict_and_merge_are_peft_s(tmp_path):
    patch_checks.check_save_pretrained_state_dict_and_merge_are_peft_s(_ia3_llama, tmp_path)
