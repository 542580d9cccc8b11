"""Shared-input LoRA in patched models: q/k/v and gate/up siblings share one down-projection
launch from their second forward on (the first learns who sees the same input), with the numbers
of unpatched PEFT (no dropout) and of the unshared fused path (dropout: the same seeds)."""

import pytest
import torch
import torch.nn as nn

import fastpeft
from fastpeft import testing
from fastpeft.ops import _counters

from .test_lora_patch_models import FAMILIES as ALL_FAMILIES

FAMILIES = {name: ALL_FAMILIES[name] for name in ("llama", "qwen2_vl")}


def _groups(report) -> dict[str, int]:
    """Shared-input groups by their members' leaf names ("q_proj,k_proj,v_proj": count)."""
    out = {}
    for names in report.shared:
        key = ",".join(n.rsplit(".", 1)[1] for n in names)
        out[key] = out.get(key, 0) + 1
    return out


@pytest.mark.parametrize("backend", ["triton", "hybrid"])
@pytest.mark.parametrize("family", FAMILIES)
def test_siblings_share_and_equal_unpatched_peft(family, backend):
    build, make_batch = FAMILIES[family]
    model = testing.make_lora_model(build(), r=8, alpha=16, dropout=0.0)
    batch = make_batch(model)
    want = testing.forward_backward(model, batch)
    exact = testing.fp64_forward_backward(model, batch)

    report = fastpeft.patch(model, backend=backend)
    layers = model.config.text_config.num_hidden_layers if family == "qwen2_vl" else None
    layers = layers or model.config.num_hidden_layers
    groups = _groups(report)
    if family == "llama":
        assert groups == {"q_proj,k_proj,v_proj": layers, "gate_proj,up_proj": layers}
    else:  # the language model's, and the vision tower's MLPs (its attention has one qkv)
        assert groups["q_proj,k_proj,v_proj"] == layers and groups["gate_proj,up_proj"] >= layers
    testing.forward_backward(model, batch)  # the first forward learns the siblings
    _counters.reset()
    got = testing.forward_backward(model, batch)
    shared_groups = sum(groups.values())
    assert _counters.launches[f"lora_shared_down:{backend}"] == shared_groups
    members = sum(len(names) for names in report.shared)
    assert _counters.launches[f"lora_up:{backend}"] == members
    testing.assert_all_within_reference_budget(got, want, exact)
    usage = report.usage(model)
    shared_names = [n for names in report.shared for n in names]
    assert all(usage[n]["shared"] == 1 for n in shared_names)


def test_dropout_masks_are_the_unshared_paths(monkeypatch):
    model = testing.make_lora_model(testing.tiny_llama(), r=8, alpha=16, dropout=0.3)
    batch = testing.causal_lm_batch(model)
    fastpeft.patch(model, backend="triton")
    runs = {}
    for mode in ("off", "on"):
        monkeypatch.setenv("FASTPEFT_SHARED_INPUT", mode)
        testing.forward_backward(model, batch)  # learning, on the first "on" pass
        _counters.reset()
        torch.manual_seed(9)
        runs[mode] = testing.forward_backward(model, batch)
        assert (_counters.launches["lora_shared_down:triton"] > 0) == (mode == "on")
    for name, value in runs["on"].items():
        assert torch.equal(value, runs["off"][name]), name
    # Dropout is on: the same seeds without it give other numbers.
    torch.manual_seed(9)
    model.eval()
    with torch.no_grad():
        assert not torch.equal(model(**batch).logits, runs["on"]["logits"])


class CrossAttention(nn.Module):
    """q from the hidden states, k and v from another input (an encoder's): q must never lead
    k or v, and k leads v."""

    def __init__(self, dim: int = 24):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim) for _ in range(3))

    def forward(self, x, context):
        return self.q_proj(x) + self.k_proj(context) * self.v_proj(context)


def _cross_attention_pair():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(CrossAttention(), config)
    reference = get_peft_model(CrossAttention(), config)
    reference.load_state_dict(peft_model.state_dict())
    return peft_model, reference


def test_members_on_other_inputs_learn_whom_to_follow():
    model, reference = _cross_attention_pair()
    report = fastpeft.patch(model, backend="triton")
    assert len(report.shared) == 1
    x, context = torch.randn(2, 5, 24), torch.randn(2, 5, 24)
    for _ in range(3):
        _counters.reset()
        torch.testing.assert_close(model(x, context), reference(x, context))
    # From the second call on, k leads context and v follows; q leads x alone.
    assert _counters.launches["lora_shared_down:triton"] == 1
    usage = {n.rsplit(".", 1)[1]: u for n, u in report.usage(model).items()}
    assert usage["q_proj"].get("shared", 0) == 0
    assert usage["k_proj"]["shared"] == usage["v_proj"]["shared"] == 2


def test_a_share_is_never_used_on_another_or_modified_input():
    model, reference = _cross_attention_pair()
    fastpeft.patch(model, backend="triton")
    inner = model.base_model.model
    x, context = torch.randn(2, 5, 24), torch.randn(2, 5, 24)
    model(x, context)  # learn: v follows k
    # v now sees another tensor than k's: its parked share is dropped, and v recomputes.
    other = torch.randn(2, 5, 24)
    got = inner.q_proj(x) + inner.k_proj(context) * inner.v_proj(other)
    ref = reference.base_model.model
    torch.testing.assert_close(got, ref.q_proj(x) + ref.k_proj(context) * ref.v_proj(other))
    model(x, context)  # v was dropped as k's follower: learned again here, nothing shared
    _counters.reset()
    # k's input modified in place after k's call: v must not use the parked share.
    y_k = inner.k_proj(context)
    context.mul_(2)
    y_v = inner.v_proj(context)
    assert _counters.launches["lora_shared_down:triton"] == 1
    torch.testing.assert_close(y_v, ref.v_proj(context))
    torch.testing.assert_close(y_k, ref.k_proj(context / 2))


def test_unpatch_drops_the_groups():
    model, reference = _cross_attention_pair()
    fastpeft.patch(model, backend="triton")
    x, context = torch.randn(2, 5, 24), torch.randn(2, 5, 24)
    model(x, context)
    assert fastpeft.unpatch(model) == 3
    _counters.reset()
    torch.testing.assert_close(model(x, context), reference(x, context))
    assert not _counters.launches
