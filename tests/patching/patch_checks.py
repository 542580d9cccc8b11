"""Checks every PEFT patcher must pass, whatever the method (LoRA, IA3): per-call fallbacks under
autocast and a dtype mismatch, an idempotent patch with a clean unpatch, and PEFT's own save and
merge. Each test file builds its method's model and picks the layer to watch; the logic is here."""

import filecmp

import pytest
import torch
import torch.nn as nn

import fastpeft
from fastpeft import testing
from fastpeft.patching import base
from fastpeft.testing import assert_close_fp32


class QuantisedLinear(nn.Linear):
    """A subclass of nn.Linear, as quantised layers (bitsandbytes', for one) present themselves:
    PEFT wraps it like a Linear, but it is not a plain GEMM, so fastpeft must not take it over."""


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def llama_with_quantised_down_proj() -> nn.Module:
    """A one-layer tiny Llama whose ``mlp.down_proj`` is a :class:`QuantisedLinear` with the same
    weights."""
    llama = testing.tiny_llama(num_layers=1)
    old = llama.model.layers[0].mlp.down_proj
    new = QuantisedLinear(old.in_features, old.out_features, bias=False)
    new.load_state_dict(old.state_dict())
    llama.model.layers[0].mlp.down_proj = new
    return llama


def check_autocast_and_dtype_mismatch_fall_back(model, layer):
    """Patched `model` under CPU autocast gives PEFT's logits bit for bit, and a 16-bit input to
    `layer` (fp32 base) raises PEFT's own dtype error; both are counted as fallbacks."""
    batch = testing.causal_lm_batch(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = logits(model, batch)
    fastpeft.patch(model, backend="torch")
    state = base.state_of(layer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = logits(model, batch)
    assert state.fallbacks == {
        "autocast to torch.bfloat16 with a torch.float32 input or weight (fused under autocast "
        "when both are in its dtype: load the model in it)": 1
    }
    assert torch.equal(got, want)

    x16 = torch.randn(3, layer.in_features, dtype=torch.float16)
    with pytest.raises(RuntimeError):  # the same dtype error PEFT itself raises
        layer(x16)
    assert state.fallbacks["input dtype differs from the base weight dtype"] == 1


def check_patch_is_idempotent_and_unpatch_restores(model, layer, count, kind):
    """Patching `model` twice patches the same `count` layers of `kind` once; `layer` keeps its
    class's forward as the original and the parameter names stay; unpatch restores every layer
    (a second unpatch finds none) and PEFT's logits."""
    batch = testing.causal_lm_batch(model)
    want = logits(model, batch)
    names_before = [n for n, _ in model.named_parameters()]
    first = fastpeft.patch(model, backend="torch")
    second = fastpeft.patch(model, backend="torch")
    assert first.patched == second.patched and len(first.patched) == count
    assert first.kinds == dict.fromkeys(first.patched, kind)
    assert base.original_forward(layer).__func__ is type(layer).forward
    assert [n for n, _ in model.named_parameters()] == names_before
    assert fastpeft.unpatch(model) == count
    assert "forward" not in layer.__dict__ and not fastpeft.is_patched(layer)
    assert fastpeft.unpatch(model) == 0
    assert_close_fp32(logits(model, batch), want, name="after unpatch")


def check_save_pretrained_state_dict_and_merge_are_peft_s(make_model, tmp_path):
    """Two models from `make_model`, one patched: the same state_dict keys, byte-identical
    save_pretrained files, and bit-identical merge_and_unload weights."""
    plain = make_model()
    patched = make_model()
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
