"""fastpeft.patch / unpatch: eligibility reasons, per-call fallbacks, idempotence, save/merge."""

import filecmp

import pytest
import torch
import torch.nn as nn

import fastpeft
from fastpeft import testing
from fastpeft.patching import base
from fastpeft.testing import assert_close_fp32


def _lora_llama(**kwargs):
    return testing.make_lora_model(testing.tiny_llama(num_layers=1), **kwargs)


def _first_lora(model):
    return model.base_model.model.model.layers[0].self_attn.q_proj


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _skipped_reasons(report):
    return {reason for reasons in report.skipped.values() for reason in reasons}


@pytest.mark.parametrize(
    "lora_kwargs, expected",
    [
        ({"use_dora": True}, "LoRA variant"),
        ({"lora_bias": True}, "lora_bias=True"),
        ({"r": 300}, "rank 300 > 256"),
    ],
    ids=["dora", "lora_bias", "rank"],
)
def test_adapter_configs_that_keep_peft_forward(lora_kwargs, expected):
    model = _lora_llama(**lora_kwargs)
    batch = testing.causal_lm_batch(model)
    want = _logits(model, batch)
    report = fastpeft.patch(model, backend="torch")
    assert report.patched == [] and len(report.skipped) == 7
    assert all(any(expected in r for r in rs) for rs in report.skipped.values()), report.skipped
    assert not base.is_patched(_first_lora(model))
    assert_close_fp32(_logits(model, batch), want, name="logits")
    with pytest.raises(ValueError, match=expected):
        fastpeft.patch(model, strict=True)


def test_several_active_adapters_are_skipped():
    from peft import LoraConfig

    model = _lora_llama()
    targets = testing.language_model_lora_targets(model)
    model.add_adapter("second", LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    model.base_model.set_adapter(["default", "second"])
    report = fastpeft.patch(model, backend="torch")
    assert not report.patched
    assert any("2 active adapters" in r for r in _skipped_reasons(report))


def test_trainable_base_weight_is_skipped():
    model = _lora_llama()
    _first_lora(model).base_layer.weight.requires_grad_(True)
    report = fastpeft.patch(model, backend="torch")
    name = next(n for n in report.skipped)
    assert name.endswith("q_proj") and len(report.patched) == 6
    assert any("trainable" in r for r in report.skipped[name])


def test_non_linear_base_layer_is_skipped():
    # A subclass of nn.Linear (how quantised layers such as bitsandbytes' present themselves) is
    # wrapped by PEFT's LoRA Linear but is not a plain GEMM: fastpeft must not take it over.
    class QuantisedLinear(nn.Linear):
        pass

    llama = testing.tiny_llama(num_layers=1)
    old = llama.model.layers[0].mlp.down_proj
    new = QuantisedLinear(old.in_features, old.out_features, bias=False)
    new.load_state_dict(old.state_dict())
    llama.model.layers[0].mlp.down_proj = new
    model = testing.make_lora_model(llama)
    report = fastpeft.patch(model, backend="torch")
    (name,) = report.skipped
    assert name.endswith("mlp.down_proj")
    assert "base layer is QuantisedLinear, not torch.nn.Linear" in report.skipped[name][0]


def test_fan_in_fan_out_conv1d_is_skipped():
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64))
    config = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True)
    model = get_peft_model(gpt2, config)
    report = fastpeft.patch(model, backend="torch")
    (reasons,) = report.skipped.values()
    assert any("fan_in_fan_out" in r for r in reasons)
    assert any("Conv1D" in r for r in reasons)


def test_lora_embedding_is_listed_as_unsupported():
    model = testing.make_lora_model(
        testing.tiny_llama(num_layers=1), targets=["embed_tokens", "q_proj"]
    )
    report = fastpeft.patch(model, backend="torch")
    assert len(report.patched) == 1
    (reasons,) = report.skipped.values()
    assert reasons == ["LoRA layer type Embedding is not supported (only Linear)"]


def test_per_call_fallbacks_give_peft_numbers():
    model = _lora_llama().eval()  # PEFT accepts adapter_names only in eval mode
    batch = testing.causal_lm_batch(model)
    with model.disable_adapter():
        want_disabled = _logits(model, batch)
    want = _logits(model, batch)
    fastpeft.patch(model, backend="torch")
    state = base.state_of(_first_lora(model))

    with model.disable_adapter():
        assert_close_fp32(_logits(model, batch), want_disabled, name="disabled")
    assert state.fallbacks["adapters disabled"] == 1

    model.merge_adapter()
    assert_close_fp32(_logits(model, batch), want, rtol=1e-4, name="merged")
    assert state.fallbacks["adapters merged"] == 1
    model.unmerge_adapter()

    names = ["default", "__base__"]
    with torch.no_grad():
        mixed = model(**batch, adapter_names=names).logits
    assert state.fallbacks["mixed-batch adapter_names"] == 1
    assert_close_fp32(mixed[0], want[0], name="mixed row 0 (adapter)")
    assert_close_fp32(mixed[1], want_disabled[1], name="mixed row 1 (base)")

    fused_before = state.fused_calls
    assert_close_fp32(_logits(model, batch), want, name="fused again")
    assert state.fused_calls == fused_before + 1


def test_autocast_and_dtype_mismatch_fall_back_to_peft():
    model = _lora_llama()
    batch = testing.causal_lm_batch(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = _logits(model, batch)
    fastpeft.patch(model, backend="torch")
    state = base.state_of(_first_lora(model))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _logits(model, batch)
    assert state.fallbacks["autocast enabled"] == 1
    assert torch.equal(got, want)

    layer = _first_lora(model)
    x16 = torch.randn(3, layer.in_features, dtype=torch.float16)
    with pytest.raises(RuntimeError):  # the same dtype error PEFT itself raises
        layer(x16)
    assert state.fallbacks["input dtype differs from the base weight dtype"] == 1


def test_patch_is_idempotent_and_unpatch_restores():
    model = _lora_llama()
    batch = testing.causal_lm_batch(model)
    want = _logits(model, batch)
    names_before = [n for n, _ in model.named_parameters()]
    first = fastpeft.patch(model, backend="torch")
    second = fastpeft.patch(model, backend="torch")
    assert first.patched == second.patched and len(first.patched) == 7
    layer = _first_lora(model)
    assert base.original_forward(layer).__func__ is type(layer).forward
    assert [n for n, _ in model.named_parameters()] == names_before
    assert fastpeft.unpatch(model) == 7
    assert "forward" not in layer.__dict__ and not fastpeft.is_patched(layer)
    assert fastpeft.unpatch(model) == 0
    assert_close_fp32(_logits(model, batch), want, name="after unpatch")


def test_model_without_lora():
    model = testing.tiny_llama(num_layers=1)
    report = fastpeft.patch(model)
    assert report.patched == [] and report.skipped == {}
    assert str(report) == "fastpeft: patched 0 PEFT modules (backend: torch); skipped 0"
    with pytest.raises(ValueError, match="no layers fastpeft can patch"):
        fastpeft.patch(model, strict=True)


def test_save_pretrained_state_dict_and_merge_are_peft_s(tmp_path):
    plain = _lora_llama()
    patched = _lora_llama()
    fastpeft.patch(patched, backend="torch")
    assert list(plain.state_dict()) == list(patched.state_dict())
    plain.save_pretrained(tmp_path / "plain")
    patched.save_pretrained(tmp_path / "patched")
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert filecmp.cmp(tmp_path / "plain" / name, tmp_path / "patched" / name, shallow=False)
    merged_plain = plain.merge_and_unload().state_dict()
    merged_patched = patched.merge_and_unload().state_dict()
    assert merged_plain.keys() == merged_patched.keys()
    for key in merged_plain:
        assert torch.equal(merged_plain[key], merged_patched[key]), key


def test_bad_arguments():
    model = _lora_llama()
    with pytest.raises(ValueError, match="backend must be one of"):
        fastpeft.patch(model, backend="cuda")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fastpeft.patch("model")
    with pytest.raises(TypeError, match="strict must be a bool"):
        fastpeft.patch(model, strict="yes")


def test_triton_on_cpu_without_interpreter_says_how(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("only meaningful without a GPU")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        fastpeft.patch(_lora_llama(), backend="triton")
