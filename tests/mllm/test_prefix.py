"""PEFT prefix tuning with fastpeft: same numbers with and without `fastpeft.patch` when combined
with fastpeft's fused adapters, on LLaVA and Qwen2-VL, for each attention implementation; on
M-RoPE models (Qwen2-VL family) patch supplies the position ids PEFT's prefix path lacks."""

import importlib.util

import pytest
import torch
from peft import get_peft_model

import fastpeft
from fastpeft import AdapterConfig, add_adapters, mllm, testing
from fastpeft.patching import prefix_positions
from fastpeft.testing import assert_close_fp32

from .helpers import FAMILY_BUILDERS, fused_calls, mrope_reference_kwargs, perturb_trainable

IMPLEMENTATIONS = [
    "sdpa",
    "eager",
    pytest.param(
        "flash_attention_2",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available(),
            reason="flash_attention_2 needs the flash_attn package and a CUDA GPU",
        ),
    ),
]


def _prefix_with_adapters(family, implementation):
    build, make_batch = FAMILY_BUILDERS[family]
    device = "cuda" if implementation == "flash_attention_2" else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = build(attn_implementation=implementation, dtype=dtype).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)  # adapter and prefix-encoder inits draw from the global RNG
        add_adapters(model, AdapterConfig(bottleneck_size=16, dropout=0.0), fused=False)
        peft_model = get_peft_model(model, mllm.paper_config(model, "prefix"))
    for name, param in peft_model.named_parameters():
        if ".fastpeft_" in name:  # PEFT froze the whole base model, adapters included
            param.requires_grad_(True)
    perturb_trainable(peft_model)
    return peft_model.eval(), make_batch(model)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_prefix_with_fused_adapters_equals_unpatched(family, implementation):
    fused, batch = _prefix_with_adapters(family, implementation)
    plain, _ = _prefix_with_adapters(family, implementation)
    report = fastpeft.patch(fused, backend="torch")
    kinds = set(report.kinds.values())
    assert {"adapter", "adapter pair"} <= kinds
    assert ("prefix M-RoPE" in kinds) == family.startswith("qwen")

    reference = mrope_reference_kwargs(plain, batch)
    exact = testing.fp64_forward_backward(plain, {**batch, **reference})
    got = testing.forward_backward(fused, batch)
    assert fused_calls(fused) > 0
    want = testing.forward_backward(plain, {**batch, **reference})

    assert got.keys() == want.keys()
    assert any("prompt_encoder" in n for n in want) and any(".fastpeft_" in n for n in want)
    testing.assert_all_within_reference_budget(got, want, exact)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_mrope_positions_follow_the_prefix(family):
    build, make_batch = FAMILY_BUILDERS[family]
    model = build()
    batch = make_batch(model)
    peft_model = get_peft_model(model, mllm.paper_config(model, "prefix")).eval()
    fastpeft.patch(peft_model)
    owner = peft_model.base_model.model
    seen = {}
    handle = owner.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True
    )
    peft_model(**batch)
    handle.remove()
    own, _ = owner.get_rope_index(
        batch["input_ids"],
        mm_token_type_ids=batch["mm_token_type_ids"],
        image_grid_thw=batch["image_grid_thw"],
        attention_mask=batch["attention_mask"],
    )
    assert torch.equal(seen["position_ids"], own + 20)  # SPEC §4: real tokens start at 20
    assert seen["attention_mask"].shape[-1] == 20 + batch["input_ids"].shape[-1]


def test_text_only_batch_on_qwen2_vl_matches_unpatched_peft():
    """Without images PEFT's prefix path works on Qwen2-VL by itself: patch must not change it,
    even after an image batch has left `rope_deltas` behind."""
    model = testing.tiny_qwen2_vl()
    peft_model = get_peft_model(model, mllm.paper_config(model, "prefix")).eval()
    text = testing.causal_lm_batch(model)
    plain = peft_model(**text).logits
    fastpeft.patch(peft_model)
    peft_model(**testing.qwen2_vl_batch(model))  # sets rope_deltas
    assert peft_model.base_model.model.rope_deltas is not None
    assert_close_fp32(peft_model(**text).logits, plain)
    assert fastpeft.unpatch(peft_model) == 1


@pytest.mark.parametrize("cache_name", prefix_positions.CACHE_KWARGS)
def test_decoding_steps_are_left_to_the_model(cache_name):
    """Both spellings of the cache argument (`cache` from transformers 5.24, `past_key_values`
    before) are honoured: a prefix-only cache gets shifted positions, a longer one is left alone."""
    model = testing.tiny_qwen2_vl()
    owner = model.model
    prefix_only, longer = _Cache(20), _Cache(25)
    ids = torch.ones(1, 1, dtype=torch.long)
    assert (
        prefix_positions.prefix_positions(owner, 20, {"input_ids": ids, cache_name: longer}) is None
    )
    given = {"input_ids": ids, cache_name: prefix_only, "position_ids": ids}
    assert prefix_positions.prefix_positions(owner, 20, given) is None
    text = prefix_positions.prefix_positions(owner, 20, {"input_ids": ids, cache_name: prefix_only})
    assert text.tolist() == [[[20]]] * 3


class _UnknownMropeModel(torch.nn.Module):
    """An M-RoPE model whose interface fastpeft does not know (no cache argument, a
    get_rope_index without attention_mask): what a future transformers might ship."""

    rope_deltas = None

    def get_rope_index(self, tokens):
        return tokens, None

    def forward(self, input_ids, position_ids=None):
        return input_ids


def test_unknown_mrope_interface_is_skipped_at_patch_time_with_reasons():
    model = testing.tiny_qwen2_vl()
    peft_model = get_peft_model(model, mllm.paper_config(model, "prefix"))
    peft_model.base_model.unknown = _UnknownMropeModel()
    report = fastpeft.patch(peft_model)
    reasons = report.skipped["base_model.unknown"]
    assert any("no cache argument" in r for r in reasons)
    assert any("get_rope_index takes no input_ids or no attention_mask" in r for r in reasons)
    assert "base_model.model" in report.patched  # the real M-RoPE model is still fixed
    with pytest.raises(ValueError, match="get_rope_index"):
        fastpeft.patch(peft_model, strict=True)


class _Cache:
    def __init__(self, length):
        self.length = length

    def get_seq_length(self):
        return self.length


def test_only_prefix_tuned_peft_models_get_the_position_fix():
    model = testing.tiny_qwen2_vl()
    lora = testing.make_lora_model(model, r=4)
    assert prefix_positions.candidates(lora) == []
    assert prefix_positions.candidates(testing.tiny_qwen2_vl()) == []
