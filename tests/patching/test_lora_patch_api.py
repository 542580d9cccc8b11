"""fastpeft.patch / unpatch: eligibility reasons, per-call fallbacks, idempotence, save/merge."""

import pytest
import torch

import fastpeft
from fastpeft import testing
from fastpeft.ops import _counters
from fastpeft.patching import base
from fastpeft.testing import assert_close_fp32

from . import patch_checks
from .patch_checks import logits


def _lora_llama(**kwargs):
    return testing.make_lora_model(testing.tiny_llama(num_layers=1), **kwargs)


def _first_lora(model):
    return model.base_model.model.model.layers[0].self_attn.q_proj


def _skipped_reasons(report):
    return {reason for reasons in report.skipped.values() for reason in reasons}


@pytest.mark.parametrize(
    "lora_kwargs, expected",
    [
        ({"use_dora": True}, "LoRA variant"),
        ({"lora_bias": True}, "lora_bias=True"),
    ],
    ids=["dora", "lora_bias"],
)
def test_adapter_configs_that_keep_peft_forward(lora_kwargs, expected):
    model = _lora_llama(**lora_kwargs)
    batch = testing.causal_lm_batch(model)
    want = logits(model, batch)
    report = fastpeft.patch(model, backend="torch")
    assert report.patched == [] and len(report.skipped) == 7
    assert all(any(expected in r for r in rs) for rs in report.skipped.values()), report.skipped
    assert not base.is_patched(_first_lora(model))
    assert_close_fp32(logits(model, batch), want, name="logits")
    with pytest.raises(ValueError, match=expected):
        fastpeft.patch(model, strict=True)


def test_rank_beyond_the_triton_limit_runs_on_the_torch_path():
    # Rank limits belong to the implementations: rank 300 is more than the Triton kernels keep in
    # registers, but the PyTorch path takes it, so the layers are patched, not skipped.
    model = _lora_llama(r=300)
    batch = testing.causal_lm_batch(model)
    want = logits(model, batch)
    _counters.reset()
    report = fastpeft.patch(model, backend="torch")
    assert len(report.patched) == 7 and not report.skipped
    assert_close_fp32(logits(model, batch), want, name="logits")
    assert _counters.launches["lora_fwd:torch"] == 7
    fastpeft.patch(model, backend="triton")  # asked for explicitly: the call says why not
    with pytest.raises(ValueError, match=r"backend='triton': it supports rank <= 256, got 300"):
        logits(model, batch)


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
    model = testing.make_lora_model(patch_checks.llama_with_quantised_down_proj())
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
        want_disabled = logits(model, batch)
    want = logits(model, batch)
    fastpeft.patch(model, backend="torch")
    state = base.state_of(_first_lora(model))

    with model.disable_adapter():
        assert_close_fp32(logits(model, batch), want_disabled, name="disabled")
    assert state.fallbacks["adapters disabled"] == 1

    model.merge_adapter()
    assert_close_fp32(logits(model, batch), want, rtol=1e-4, name="merged")
    assert state.fallbacks["adapters merged"] == 1
    model.unmerge_adapter()

    names = ["default", "__base__"]
    with torch.no_grad():
        mixed = model(**batch, adapter_names=names).logits
    assert state.fallbacks["mixed-batch adapter_names"] == 1
    assert_close_fp32(mixed[0], want[0], name="mixed row 0 (adapter)")
    assert_close_fp32(mixed[1], want_disabled[1], name="mixed row 1 (base)")

    fused_before = state.fused_calls
    assert_close_fp32(logits(model, batch), want, name="fused again")
    assert state.fused_calls == fused_before + 1


def test_autocast_and_dtype_mismatch_fall_back_to_peft():
    model = _lora_llama()
    patch_checks.check_autocast_and_dtype_mismatch_fall_back(model, _first_lora(model))


def test_patch_is_idempotent_and_unpatch_restores():
    model = _lora_llama()
    layer = _first_lora(model)
    patch_checks.check_patch_is_idempotent_and_unpatch_restores(model, layer, 7, "LoRA")


def test_model_without_lora():
    model = testing.tiny_llama(num_layers=1)
    report = fastpeft.patch(model)
    assert report.patched == [] and report.skipped == {}
    assert str(report) == "fastpeft: patched 0 PEFT modules (backend: torch); skipped 0"
    with pytest.raises(ValueError, match="no layers fastpeft can patch"):
        fastpeft.patch(model, strict=True)


def test_save_pretrained_state_dict_and_merge_are_peft_s(tmp_path):
    patch_checks.check_save_pretrained_state_dict_and_merge_are_peft_s(_lora_llama, tmp_path)


def test_bad_arguments():
    model = _lora_llama()
    with pytest.raises(ValueError, match="backend must be one of"):
        fastpeft.patch(model, backend="fast")
    # "cuda" is in the one vocabulary (SPIDER's CUDA extension), but LoRA has no such backend:
    # refused at patch time, not at the first forward.
    with pytest.raises(ValueError, match="backend='cuda': fastpeft LoRA has no cuda impl"):
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
