"""fastpeft's bottleneck adapters: config, placement, freezing, save/load, removal."""

import pytest
import torch

import fastpeft
from fastpeft import testing
from fastpeft.adapters.placement import adapter_modules
from fastpeft.testing import assert_close_fp32

H = 8  # bottleneck size for the tiny models (hidden 64)


def _config(**kwargs):
    return fastpeft.AdapterConfig(bottleneck_size=H, dropout=0.0, **kwargs)


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"bottleneck_size": 0}, ValueError, "bottleneck_size must be a positive int"),
        ({"bottleneck_size": 2.5}, ValueError, "bottleneck_size must be a positive int"),
        ({"non_linearity": "swish"}, ValueError, "non_linearity must be one of"),
        ({"init": "xavier"}, ValueError, "init must be one of"),
        ({"dropout": 1.0}, ValueError, r"dropout must be a number in \[0, 1\)"),
        ({"scaling": float("inf")}, ValueError, "scaling must be a finite number"),
        ({"pre_modules": [3]}, TypeError, "pre_modules must be a sequence of module names"),
        ({"pre_modules": (), "post_modules": ()}, ValueError, "are all empty"),
        ({"dtype": "float64"}, ValueError, "dtype must be one of"),
    ],
)
def test_bad_configs(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        fastpeft.AdapterConfig(**kwargs)


def test_unknown_module_names_and_models_are_refused():
    with pytest.raises(ValueError, match="pre_modules: no module named 'gate'"):
        fastpeft.add_adapters(testing.tiny_llava(), _config(pre_modules=("gate",)))
    with pytest.raises(ValueError, match="layers: indices"):
        fastpeft.add_adapters(testing.tiny_llava(), _config(layers=(5,)))
    with pytest.raises(ValueError, match="decoder_layers="):
        fastpeft.add_adapters(torch.nn.Sequential(torch.nn.Linear(4, 4)), _config())


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen2_5_vl", "llama"])
def test_paper_a_placement_only_in_the_language_model(family):
    build = {
        "llava": testing.tiny_llava,
        "qwen2_vl": testing.tiny_qwen2_vl,
        "qwen2_5_vl": testing.tiny_qwen2_5_vl,
    }
    model = build.get(family, testing.tiny_llama)()
    fastpeft.add_adapters(model, _config(), fused=False)
    config = model._fastpeft_adapter_config
    assert len(config.placements) == 3 * 2
    lm_prefix = "model.language_model.layers." if family != "llama" else "model.layers."
    for i in range(2):
        for where in ("mlp.gate_proj:pre", "mlp.up_proj:pre", "mlp.down_proj:post"):
            assert f"{lm_prefix}{i}.{where}" in config.placements
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if "fastpeft_" in n}
    assert not any("vision" in n or "visual" in n or "projector" in n for n in trainable)
    d = model.config.get_text_config().hidden_size
    assert sum(model.get_parameter(n).numel() for n in trainable) == 2 * 3 * 2 * d * H


def test_adapter_module_is_spec_literal():
    model = fastpeft.add_adapters(testing.tiny_llama(), _config(init="bert"), fused=False)
    (_, adapter), *_ = adapter_modules(model)
    z = torch.randn(3, 5, adapter.down.weight.shape[1])
    want = z + 1.0 * torch.tanh(z @ adapter.down.weight.T) @ adapter.up.weight.T
    assert_close_fp32(adapter(z), want)
    assert adapter.up.weight.abs().sum() > 0, "bert init is not the identity"
    lora_init = fastpeft.add_adapters(testing.tiny_llama(), _config(init="lora"), fused=False)
    assert all(m.up.weight.abs().sum() == 0 for _, m in adapter_modules(lora_init))


def test_remove_adapters_restores_the_base_model():
    model = testing.tiny_llava()
    model.model.multi_modal_projector.requires_grad_(True)
    model.model.language_model.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    batch = testing.llava_batch(model)
    want = _logits(model, batch)
    fastpeft.add_adapters(model, _config())
    assert not torch.allclose(_logits(model, batch), want)
    fastpeft.remove_adapters(model)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert torch.equal(_logits(model, batch), want)
    with pytest.raises(ValueError, match="has no fastpeft adapters"):
        fastpeft.remove_adapters(model)


def test_remove_adapters_leaves_patched_lora_layers_patched():
    # LoRA on the attention, adapters on the MLP: taking the adapters out must undo only their
    # fused forwards, never silently slow the rest of the model down.
    model = testing.make_lora_model(testing.tiny_llama(), targets=["q_proj", "v_proj"])
    fastpeft.add_adapters(model, _config())
    report = fastpeft.patch(model, backend="torch")
    kinds = {report.kinds[n] for n in report.patched}
    assert kinds == {"LoRA", "adapter pair", "adapter"}
    lora_layers = [n for n in report.patched if report.kinds[n] == "LoRA"]
    fastpeft.remove_adapters(model)
    modules = dict(model.named_modules())
    assert lora_layers and all(fastpeft.is_patched(modules[n]) for n in lora_layers)
    assert not any(fastpeft.is_patched(m) for n, m in modules.items() if n.endswith("mlp"))
    assert fastpeft.unpatch(model) == len(lora_layers)


def test_save_load_round_trip_is_exact(tmp_path):
    model = fastpeft.add_adapters(testing.tiny_llava(), _config(layers=(1,)))
    with torch.no_grad():
        for _, m in adapter_modules(model):
            m.up.weight.normal_()
    batch = testing.llava_batch(model)
    want = _logits(model, batch)
    fastpeft.save_adapters(model, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "adapter_model.safetensors",
        "adapter_config.json",
    }
    fresh = fastpeft.load_adapters(testing.tiny_llava(), tmp_path)
    assert fresh._fastpeft_adapter_config == model._fastpeft_adapter_config
    for (_, a), (_, b) in zip(adapter_modules(model), adapter_modules(fresh), strict=True):
        assert torch.equal(a.down.weight, b.down.weight) and torch.equal(a.up.weight, b.up.weight)
    assert torch.equal(_logits(fresh, batch), want)
    other = testing.tiny_llava(hidden_size=32)
    with pytest.raises(ValueError, match="saved shape"):
        fastpeft.load_adapters(other, tmp_path)
    assert not hasattr(other, "_fastpeft_adapter_config"), "a failed load leaves no adapters"
