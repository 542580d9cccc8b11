"""Quantised base layers stay on PEFT's path, with a reason that says why (real bitsandbytes on
CPU: 4-bit NF4 and 8-bit LLM.int8() bases quantised by transformers' BitsAndBytesConfig from a
locally saved tiny Llama). A model mixing quantised and dense layers gets the fused path on the
dense ones, with the numbers of unpatched PEFT."""

import copy

import pytest
import torch

import fastpeft
from fastpeft import testing
from fastpeft.testing import assert_close_fp32

from ..mllm.helpers import fused_calls, grads

bnb = pytest.importorskip("bitsandbytes")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

QUANTISATIONS = {
    "4bit": (dict(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32), "Linear4bit"),
    "8bit": (dict(load_in_8bit=True), "Linear8bitLt"),
}


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llama")
    testing.tiny_llama().save_pretrained(path)
    return path


def _quantised_lora(path, quantisation: dict, **skip):
    config = transformers.BitsAndBytesConfig(**quantisation, **skip)
    model = transformers.LlamaForCausalLM.from_pretrained(
        path, quantization_config=config, device_map="cpu"
    )
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                           init_lora_weights=False)  # fmt: skip
    return peft.get_peft_model(model, lora)


@pytest.mark.parametrize("bits", sorted(QUANTISATIONS))
def test_quantised_layers_keep_peft_forward_with_a_reason(saved_llama, bits):
    quantisation, layer_type = QUANTISATIONS[bits]
    model = _quantised_lora(saved_llama, quantisation)
    batch = testing.causal_lm_batch(model, seed=0)
    with torch.no_grad():
        want = model(**batch).logits

    with pytest.warns(UserWarning, match="patched nothing"):
        report = fastpeft.patch(model)
    assert report.patched == [] and len(report.skipped) == 4  # q/v_proj of the two layers
    reason = (
        f"quantised base layer (bitsandbytes {layer_type}): the fused kernels read a dense "
        "fp32/fp16/bf16 weight, so PEFT's own forward (which dequantises it) runs"
    )
    assert all(reasons == [reason] for reasons in report.skipped.values())
    assert f"bitsandbytes {layer_type}" in str(report)
    with torch.no_grad():
        got = model(**batch).logits
    assert torch.equal(got, want)  # PEFT's own forward, untouched
    with pytest.raises(ValueError, match=f"quantised base layer \\(bitsandbytes {layer_type}\\)"):
        fastpeft.patch(model, strict=True)


def test_dense_layers_beside_quantised_ones_take_the_fused_path(saved_llama):
    # v_proj left dense (and lm_head, which transformers keeps dense anyway): q_proj is 8-bit.
    skip = {"llm_int8_skip_modules": ["v_proj", "lm_head"]}
    plain = _quantised_lora(saved_llama, QUANTISATIONS["8bit"][0], **skip)
    fused = copy.deepcopy(plain)
    report = fastpeft.patch(fused, backend="torch")
    assert sorted(n.rsplit(".", 1)[-1] for n in report.patched) == ["v_proj", "v_proj"]
    assert sorted(n.rsplit(".", 1)[-1] for n in report.skipped) == ["q_proj", "q_proj"]

    batch = testing.causal_lm_batch(plain, seed=1)
    plain(**batch).loss.backward()
    fused(**batch).loss.backward()
    assert fused_calls(fused) == 2
    want, got = grads(plain), grads(fused)
    assert got.keys() == want.keys() and len(want) == 8  # lora_A/B of q/v in two layers
    for name in want:
        # The same fp32 math in another order; q_proj's int8 GEMM is PEFT's in both runs.
        assert_close_fp32(got[name], want[name], rtol=1e-5, name=name)
