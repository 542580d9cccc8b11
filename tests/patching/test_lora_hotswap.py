"""PEFT's compiled hot-swap on a patched model: `prepare_model_for_compiled_hotswap` turns every
LoRA scaling into a 0-d tensor and pads the ranks; the layers stay fused, equal to PEFT, and follow
`hotswap_adapter` (new weights, new alpha written into the same scaling tensors in place)."""

import warnings

import pytest
import torch

import fastpeft
from fastpeft import testing
from fastpeft.patching import base
from fastpeft.testing import assert_close_fp32

hotswap = pytest.importorskip("peft.utils.hotswap", reason="the installed peft has no hot-swap")


def _prepared(device):
    model = testing.make_lora_model(testing.tiny_llama(num_layers=1), r=8, alpha=16).to(device)
    hotswap.prepare_model_for_compiled_hotswap(model, target_rank=16)
    return model


def _step(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads


def _assert_same(got, want, what):
    assert_close_fp32(got[0], want[0], rtol=1e-4, name=f"logits ({what})")
    assert got[1].keys() == want[1].keys() and got[1]
    for name, grad in want[1].items():
        assert_close_fp32(got[1][name], grad, rtol=1e-4, name=f"{name} ({what})")


def _layers(model):
    return [m for m in model.modules() if base.is_patched(m)]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_hotswap_prepared_model_is_fused_and_follows_a_swap(backend, device, tmp_path):
    reference, patched = _prepared(device), _prepared(device)
    report = fastpeft.patch(patched, backend=backend)
    assert len(report.patched) == 7 and not report.skipped, report
    for layer in _layers(patched):
        assert torch.is_tensor(layer.scaling["default"]) and layer.scaling["default"].dim() == 0
    batch = testing.causal_lm_batch(patched)
    _assert_same(_step(patched, batch), _step(reference, batch), "prepared")

    # Another adapter (rank 16, alpha 4: scaling 0.25) swapped into both, in place.
    other = testing.make_lora_model(testing.tiny_llama(num_layers=1), r=16, alpha=4, seed=3)
    other.save_pretrained(tmp_path / "other")
    for model in (reference, patched):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hotswap.hotswap_adapter(
                model, str(tmp_path / "other"), "default", torch_device=str(device)
            )
    assert all(float(m.scaling["default"]) == 0.25 for m in _layers(patched))
    for model in (reference, patched):
        # peft 0.19 leaves swapped-in weights frozen (hot-swap is an inference feature there);
        # train them in both models so the comparison covers the backward too.
        for name, param in model.named_parameters():
            if ".lora_" in name:
                param.requires_grad_(True)
    _assert_same(_step(patched, batch), _step(reference, batch), "after the swap")
    for layer in _layers(patched):  # both steps fused; no call fell back to PEFT
        state = base.state_of(layer)
        assert state.fused_calls == 2 and not state.fallbacks, state
