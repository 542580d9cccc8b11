"""Patched vs unpatched PEFT LoRA on tiny real HF models: logits, loss and every LoRA gradient."""

import pytest
import torch

import fastpeft
from fastpeft import testing
from fastpeft.ops import _counters
from fastpeft.testing import assert_close_fp32

FAMILIES = {
    "llama": (testing.tiny_llama, testing.causal_lm_batch),
    "llava": (testing.tiny_llava, testing.llava_batch),
    "qwen2_vl": (testing.tiny_qwen2_vl, testing.qwen2_vl_batch),
    "qwen2_5_vl": (testing.tiny_qwen2_5_vl, testing.qwen2_vl_batch),
}


@pytest.mark.parametrize("backend", ["triton", "hybrid", "torch"])
@pytest.mark.parametrize("family", FAMILIES)
def test_patched_equals_unpatched_fp32(family, backend):
    build, make_batch = FAMILIES[family]
    model = testing.make_lora_model(build(), r=8, alpha=16, dropout=0.0)
    batch = make_batch(model)
    want = testing.forward_backward(model, batch)
    exact = testing.fp64_forward_backward(model, batch)

    report = fastpeft.patch(model, backend=backend)
    expected = testing.language_model_linear_names(model)
    assert sorted(report.patched) == sorted(expected) and not report.skipped
    assert str(report) == (
        f"fastpeft: patched {len(expected)} LoRA modules (backend: {backend}); skipped 0"
    )
    _counters.reset()
    got = testing.forward_backward(model, batch)
    # Proof the fused path ran: one forward and one backward launch per LoRA module.
    assert _counters.launches[f"lora_fwd:{backend}"] == len(expected)
    assert _counters.launches[f"lora_bwd:{backend}"] == len(expected)

    assert len(got) == 2 + 2 * len(expected)  # logits, loss, every lora_A and lora_B
    testing.assert_all_within_reference_budget(got, want, exact)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("autocast_adapter_dtype", [True, False], ids=["fp32-lora", "fp16-lora"])
def test_fp16_base_matches_peft_within_budget(backend, autocast_adapter_dtype):
    # PEFT's default on a 16-bit base keeps fp32 adapters; the other regime has 16-bit adapters.
    # (bf16 is the GPU tier's job: the interpreter has no bf16 arithmetic.)
    model = testing.make_lora_model(
        testing.tiny_llama(dtype=torch.float16), autocast_adapter_dtype=autocast_adapter_dtype
    )
    lora_dtype = torch.float32 if autocast_adapter_dtype else torch.float16
    assert model.base_model.model.model.layers[0].self_attn.q_proj.lora_A.default.weight.dtype == (
        lora_dtype
    )
    batch = testing.causal_lm_batch(model)
    peft16 = testing.forward_backward(model, batch)
    fastpeft.patch(model, backend=backend)
    fused = testing.forward_backward(model, batch)
    fastpeft.unpatch(model)
    model32 = testing.make_lora_model(testing.tiny_llama(dtype=torch.float32))
    model32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    ref32 = testing.forward_backward(model32, batch)
    testing.assert_within_dtype_budget(
        fused["logits"], ref32["logits"], peft16["logits"], name="logits"
    )
    for name in [n for n in peft16 if n.startswith("grad ")]:
        testing.assert_within_dtype_budget(
            fused[name].float(), ref32[name], peft16[name].float(), floor=2e-3, name=name
        )


def test_dropout_is_active_and_seeded():
    model = testing.make_lora_model(testing.tiny_llama(), dropout=0.3)
    batch = testing.causal_lm_batch(model)
    fastpeft.patch(model, backend="torch")
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(**batch).logits
        torch.manual_seed(1)
        b = model(**batch).logits
        torch.manual_seed(2)
        c = model(**batch).logits
        model.eval()
        d = model(**batch).logits
    assert torch.equal(a, b), "dropout must be reproducible under torch.manual_seed"
    assert not torch.allclose(a, c), "dropout must draw a new mask per step"
    fastpeft.unpatch(model)
    with torch.no_grad():
        assert_close_fp32(d, model(**batch).logits, name="eval mode: dropout off, equals PEFT")
