"""Mixed dtypes and checkpoints across patching: bf16 base + fp32 adapters, fp16 and bf16 models
under autocast (fused) and an fp32 one under it (PEFT's forward), fp32 everywhere train without
dtype errors wherever stock PEFT does and give PEFT's numbers (within the dtype budget); a
checkpoint saved from a patched model loads into an unpatched one and vice versa; patching is
idempotent for every method."""

import pytest
import torch
from peft import PeftModel

import fastpeft
from fastpeft import mllm, testing
from fastpeft.patching import base
from fastpeft.testing import (
    assert_all_within_reference_budget,
    assert_close_fp32,
    assert_within_reference_budget,
)

from ..mllm.helpers import fused_calls, grads, perturb_trainable


def _setup(method, dtype, autocast_adapter_dtype=True):
    model = testing.tiny_llava(dtype=dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        setup = mllm.paper_setup(
            model, method, backend="torch", autocast_adapter_dtype=autocast_adapter_dtype
        )
    perturb_trainable(setup.model)
    return setup.model.eval(), testing.llava_batch(model)


def _loss_and_grads(model, batch, autocast=None):
    if autocast is None:
        loss = model(**batch).loss
    else:
        with torch.autocast("cpu", dtype=autocast):
            loss = model(**batch).loss
    loss.backward()
    return loss.detach().float(), {n: g.float() for n, g in grads(model).items()}


# (loss, gradient) relative tolerances. bf16: PEFT and fastpeft round the bf16 base GEMM's inputs
# and outputs at different places; measured worst gradient gap 2.6e-2 of a tensor's max (LoRA,
# bf16 adapters), the loss within 6e-5.
TOLERANCE = {torch.float32: (1e-5, 2e-4), torch.bfloat16: (1e-3, 5e-2)}


@pytest.mark.parametrize("method", ["lora", "ia3", "adapter"])
@pytest.mark.parametrize(
    "dtype, adapters_fp32",
    [(torch.float32, True), (torch.bfloat16, True), (torch.bfloat16, False)],
    ids=["fp32", "bf16-base-fp32-adapters", "bf16-everything"],
)
def test_mixed_dtypes_match_peft(method, dtype, adapters_fp32):
    fused, batch = _setup(method, dtype, adapters_fp32)
    plain, _ = _setup(method, dtype, adapters_fp32)
    fastpeft.unpatch(plain)
    loss, got = _loss_and_grads(fused, batch)
    assert fused_calls(fused) > 0, "the fused path must take the mixed-dtype layers"
    ref_loss, want = _loss_and_grads(plain, batch)
    loss_rel, grad_rel = TOLERANCE[dtype]
    assert abs(float(loss) - float(ref_loss)) <= loss_rel * abs(float(ref_loss))
    assert got.keys() == want.keys()
    for name in want:
        scale = float(want[name].abs().max()) + 1e-12
        err = float((got[name] - want[name]).abs().max())
        assert err <= grad_rel * scale, f"{name}: {err:.3e} vs scale {scale:.3e}"


@pytest.mark.parametrize("method", ["lora", "ia3", "adapter"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_autocast_over_a_model_in_its_dtype_takes_the_fused_path(method, dtype):
    """Autocast is the HF Trainer's and TRL's mixed precision. Over a model loaded in autocast's
    dtype the fused path runs every call, and its loss and gradients stay within the error budget
    of stock PEFT under the same autocast, both measured against an fp64 run."""
    fused, batch = _setup(method, dtype)
    plain, _ = _setup(method, dtype)
    fastpeft.unpatch(plain)
    exact = testing.fp64_copy(plain)
    loss, got = _loss_and_grads(fused, batch, autocast=dtype)
    assert fused_calls(fused) > 0
    assert all(not base.state_of(m).fallbacks for m in fused.modules() if base.is_patched(m))
    ref_loss, want = _loss_and_grads(plain, batch, autocast=dtype)
    exact_loss, exact_grads = _loss_and_grads(exact, testing.fp64_batch(batch))
    assert_within_reference_budget(loss, ref_loss, exact_loss, name="loss")
    assert got.keys() == want.keys() == exact_grads.keys() and len(want) > 0
    assert_all_within_reference_budget(got, want, exact_grads, what="grad", norm="rms")


def test_autocast_over_an_fp32_model_keeps_peft_forward():
    """Plain AMP (bf16 autocast over fp32 weights) would cast per call: PEFT's forward runs, with
    the reason counted, and the numbers are PEFT's exactly."""
    fused, batch = _setup("lora", torch.float32)
    plain, _ = _setup("lora", torch.float32)
    fastpeft.unpatch(plain)
    loss, got = _loss_and_grads(fused, batch, autocast=torch.bfloat16)
    ref_loss, want = _loss_and_grads(plain, batch, autocast=torch.bfloat16)
    assert fused_calls(fused) == 0
    reasons = {r for m in fused.modules() if base.is_patched(m) for r in base.state_of(m).fallbacks}
    assert reasons == {
        "autocast to torch.bfloat16 with a torch.float32 input or weight (fused under autocast "
        "when both are in its dtype: load the model in it)"
    }
    assert torch.equal(loss, ref_loss) and got.keys() == want.keys()
    assert all(torch.equal(got[n], want[n]) for n in want)


def _lora_llava():
    return testing.make_lora_model(testing.tiny_llava(), r=4, dropout=0.0)


def test_peft_checkpoint_crosses_patching_both_ways(tmp_path):
    batch = testing.llava_batch(testing.tiny_llava())
    patched = _lora_llava()
    fastpeft.patch(patched, backend="torch")
    patched.save_pretrained(tmp_path / "from_patched")
    unpatched = _lora_llava()
    perturb_trainable(unpatched, seed=5)
    unpatched.save_pretrained(tmp_path / "from_unpatched")

    loaded = PeftModel.from_pretrained(testing.tiny_llava(), tmp_path / "from_patched").eval()
    assert_close_fp32(loaded(**batch).logits, patched.eval()(**batch).logits)
    into_patched = PeftModel.from_pretrained(testing.tiny_llava(), tmp_path / "from_unpatched")
    fastpeft.patch(into_patched, backend="torch")
    into_patched.eval()
    assert_close_fp32(into_patched(**batch).logits, unpatched.eval()(**batch).logits)
    assert fused_calls(into_patched) > 0


def test_fastpeft_adapters_checkpoint_crosses_patching(tmp_path):
    config = fastpeft.AdapterConfig(bottleneck_size=8, dropout=0.0)
    fused = fastpeft.add_adapters(testing.tiny_llava(), config, fused=True).eval()
    batch = testing.llava_batch(fused)
    fastpeft.save_adapters(fused, tmp_path)
    eager = fastpeft.load_adapters(testing.tiny_llava(), tmp_path, fused=False).eval()
    assert fastpeft.unpatch(eager) == 0, "fused=False loads eager adapters"
    assert_close_fp32(eager(**batch).logits, fused(**batch).logits)


@pytest.mark.parametrize("method", ["lora", "ia3", "adapter"])
def test_patching_twice_is_idempotent(method):
    model, batch = _setup(method, torch.float32)
    first = fastpeft.patch(model, backend="torch")
    second = fastpeft.patch(model, backend="torch")
    assert first.patched == second.patched and first.patched
    model(**batch)
    once = fused_calls(model)
    fastpeft.patch(model, backend="torch")
    model(**batch)
    assert fused_calls(model) == 2 * once, "a second patch must not wrap anything twice"
    # Every patched module runs fused once per forward (a gate/up pair owns its two adapters).
    assert once == len(first.patched), "each layer runs fused once per forward"
    assert fastpeft.unpatch(model) == len(first.patched)
    assert fastpeft.unpatch(model) == 0
