"""fastpeft.mllm: parts found by structure, target selection, connector toggling, param groups."""

import pytest
import torch
from peft import IA3Config, LoraConfig, get_peft_model

from fastpeft import mllm, testing

# family: (factory, decoder-layer prefix, vision tower path, connector path), all written out
FAMILIES = {
    "llava": (
        testing.tiny_llava,
        "model.language_model.layers",
        "model.vision_tower",
        "model.multi_modal_projector",
    ),
    "qwen2_vl": (
        testing.tiny_qwen2_vl,
        "model.language_model.layers",
        "model.visual",
        "model.visual.merger",
    ),
    "qwen2_5_vl": (
        testing.tiny_qwen2_5_vl,
        "model.language_model.layers",
        "model.visual",
        "model.visual.merger",
    ),
    "idefics3": (
        testing.tiny_idefics3,
        "model.text_model.layers",
        "model.vision_model",
        "model.connector",
    ),
}


def _expected(prefix, leaves, layers=2):
    where = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn"}
    where.update(o_proj="self_attn", gate_proj="mlp", up_proj="mlp", down_proj="mlp")
    return [f"{prefix}.{i}.{where[leaf]}.{leaf}" for i in range(layers) for leaf in leaves]


@pytest.mark.parametrize("family", FAMILIES)
def test_parts_and_targets(family):
    build, prefix, vision_path, connector_path = FAMILIES[family]
    model = build()
    modules = dict(model.named_modules())
    assert mllm.language_model(model) is modules[prefix.removesuffix(".layers")]
    assert mllm.vision_tower(model) is modules[vision_path]
    assert mllm.connector(model) is modules[connector_path]
    attn, mlp = ("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj")
    assert mllm.target_modules(model, "lora", "attention") == _expected(prefix, attn)
    assert mllm.target_modules(model, "lora", "mlp") == _expected(prefix, mlp)
    assert sorted(mllm.target_modules(model)) == sorted(_expected(prefix, attn + mlp))
    assert mllm.target_modules(model, "ia3") == _expected(prefix, ("k_proj", "v_proj", "down_proj"))
    assert mllm.target_modules(model, "ia3", "attention") == _expected(prefix, ("k_proj", "v_proj"))
    assert mllm.target_modules(model, "adapter", "attention") == _expected(prefix, ("o_proj",))
    assert mllm.ia3_feedforward_modules(model) == _expected(prefix, ("down_proj",))
    assert mllm.ia3_feedforward_modules(model, "attention") == []
    # the vision tower has its own q/k/v_proj: none of them may be selected
    vision_q = [n for n in modules if n.startswith(vision_path + ".") and n.endswith("q_proj")]
    assert vision_q or family.startswith("qwen"), "the tiny vision tower should have q_proj"
    for method in mllm.METHODS:
        selected = set(mllm.target_modules(model, method))
        assert all(n.startswith(prefix + ".") for n in selected)


@pytest.mark.parametrize("family", FAMILIES)
def test_targets_work_as_peft_target_modules_and_connector_toggles(family):
    build, prefix, _, _ = FAMILIES[family]
    model = build()
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=mllm.target_modules(model)))
    wrapped = {n for n, m in lora.base_model.model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == set(mllm.target_modules(model))
    connector_params = list(mllm.connector(lora).parameters())
    assert not any(p.requires_grad for p in connector_params), "PEFT freezes the connector"
    count = mllm.set_connector_trainable(lora, True)
    assert count == sum(p.numel() for p in connector_params) > 0
    assert all(p.requires_grad for p in connector_params)
    groups = mllm.param_groups(lora, lr=2e-4, connector_lr=2e-5)
    assert [g["lr"] for g in groups] == [2e-4, 2e-5]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in connector_params}
    assert all(
        "lora_" in n
        for n, p in lora.named_parameters()
        if p.requires_grad and not any(p is q for q in connector_params)
    )
    mllm.set_connector_trainable(lora, False)
    assert len(mllm.param_groups(lora, lr=1.0)) == 1


def test_ia3_config_from_helpers():
    model = testing.tiny_llava()
    config = IA3Config(
        target_modules=mllm.target_modules(model, "ia3"),
        feedforward_modules=mllm.ia3_feedforward_modules(model),
    )
    ia3 = get_peft_model(model, config)
    assert sum(p.numel() for p in ia3.parameters() if p.requires_grad) == 2 * (
        32 + 32 + 192
    )  # k, v: 2 kv heads x 16; down: 192 in


def test_errors_name_what_was_looked_for():
    llama = testing.tiny_llama()
    with pytest.raises(ValueError, match="vision tower .*model.vision_tower"):
        mllm.vision_tower(llama)
    with pytest.raises(ValueError, match="method must be one of"):
        mllm.target_modules(llama, "prefix")
    with pytest.raises(ValueError, match="location must be one of"):
        mllm.target_modules(llama, "lora", "everywhere")
    with pytest.raises(ValueError, match="decoder layers"):
        mllm.language_model(torch.nn.Linear(2, 2))
