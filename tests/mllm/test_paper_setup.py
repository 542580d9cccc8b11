"""`mllm.paper_setup`: each of Paper A's methods × connector on/off on each family trains one step
with the fused paths and gives the numbers of the same setup unpatched; parameter counts follow
SPEC's formulas; bad input names the argument."""

import copy

import pytest
import torch

import fastpeft
from fastpeft import mllm, testing
from fastpeft.testing import (
    assert_all_within_reference_budget,
    assert_within_reference_budget,
)
from fastpeft.tolerance import REFERENCE_FLOOR_ULPS, reference_budget

from .helpers import FAMILY_BUILDERS, fused_calls, grads, mrope_reference_kwargs, perturb_trainable


def _setup(family, method, connector, location="both"):
    build, make_batch = FAMILY_BUILDERS[family]
    model = build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)  # PEFT's own inits draw from the global RNG
        setup = mllm.paper_setup(
            model, method, connector=connector, location=location, backend="torch"
        )
    perturb_trainable(setup.model)
    # eval(): LoRA/adapter dropout masks come from different RNGs in PEFT and fastpeft; with
    # dropout off both compute the same function, and backward still runs through every layer.
    setup.model.eval()
    return setup, make_batch(model)


def _train_step(setup, batch, **extra):
    optimizer = setup.optimizer()
    loss = setup.model(**batch, **extra).loss
    loss.backward()
    step_grads = grads(setup.model)
    optimizer.step()
    params = {n: p.detach().clone() for n, p in setup.model.named_parameters() if p.requires_grad}
    return loss.detach(), step_grads, params


def _assert_first_adam_step_within_budget(setup, params, exact_params, ref_grads, exact_grads):
    """Parameters after AdamW's first step, p − lr·g/(|g| + eps), against the fp64 run: the step is
    ill-conditioned where |g| is near eps (a last-bit change of g moves p by up to lr), so the
    budget of each element is the gradient's budget carried through that map exactly: the most
    the step can move for any gradient within the budget of the fp64 gradient. Gradients are
    judged on their own above; this checks the step used the right parameters and rates."""
    lr_of = {id(p): group["lr"] for group in setup.param_groups() for p in group["params"]}
    lrs = {n: lr_of[id(p)] for n, p in setup.model.named_parameters() if p.requires_grad}
    eps = setup.optimizer().defaults["eps"]

    def step(g):
        return g / (g.abs() + eps)

    for name, p64 in exact_params.items():
        g64 = exact_grads[name]
        grad_budget = reference_budget(ref_grads[name], g64)
        spread = torch.maximum(
            (step(g64 + grad_budget) - step(g64)).abs(), (step(g64 - grad_budget) - step(g64)).abs()
        )
        floor = REFERENCE_FLOOR_ULPS * torch.finfo(torch.float32).eps * float(p64.abs().max())
        err = (params[name].double() - p64).abs()
        allowed = lrs[name] * spread + floor
        assert bool((err <= allowed).all()), (
            f"param {name}: {int((err > allowed).sum())} elements further from the fp64 step than "
            f"the gradient budget allows; worst excess {float((err - allowed).max()):.3e}"
        )


@pytest.mark.parametrize("connector", [True, False], ids=["connector", "frozen-connector"])
@pytest.mark.parametrize("method", mllm.PAPER_METHODS)
@pytest.mark.parametrize("family", FAMILY_BUILDERS)
def test_one_step_patched_equals_unpatched(family, method, connector):
    fused, batch = _setup(family, method, connector)
    plain, _ = _setup(family, method, connector)
    assert fastpeft.unpatch(plain.model) == len(fused.patch_report.patched)
    exact = copy.deepcopy(plain)
    exact.model.to(torch.float64)

    loss, step_grads, params = _train_step(fused, batch)
    if fused.patch_report.patched:
        assert fused_calls(fused.model) > 0, "the fused path must have run"
    extra = mrope_reference_kwargs(plain.model, batch) if method == "prefix" else {}
    ref_loss, ref_grads, ref_params = _train_step(plain, batch, **extra)
    exact_loss, exact_grads, exact_params = _train_step(exact, testing.fp64_batch(batch), **extra)

    # Error budgets against the fp64 run of unpatched PEFT: fastpeft is at most a small multiple
    # further from it than PEFT in fp32 is.
    assert_within_reference_budget(loss, ref_loss, exact_loss, name="loss")
    assert step_grads and step_grads.keys() == ref_grads.keys()
    assert_all_within_reference_budget(step_grads, ref_grads, exact_grads, what="grad")
    _assert_first_adam_step_within_budget(fused, params, exact_params, ref_grads, exact_grads)
    in_connector = {id(p) for p in mllm.connector(fused.model).parameters()}
    connector_grads = [p.grad for p in fused.model.parameters() if id(p) in in_connector]
    assert all(g is not None for g in connector_grads) == connector
    assert [g["lr"] for g in fused.param_groups()] == (
        [mllm.PAPER_A_LEARNING_RATES[method], 2e-5] if connector else [fused.lr]
    )
    vision = mllm.vision_tower(fused.model)  # Qwen2-VL's merger (the connector) sits inside it
    assert not any(p.requires_grad for p in vision.parameters() if id(p) not in in_connector)


def test_patch_kinds_per_method():
    kinds = {}
    for method in ("lora", "ia3", "adapter"):
        setup, _ = _setup("llava", method, True)
        kinds[method] = set(setup.patch_report.kinds.values())
    assert kinds == {"lora": {"LoRA"}, "ia3": {"IA3"}, "adapter": {"adapter pair", "adapter"}}
    setup, _ = _setup("qwen2_vl", "prefix", True)
    assert setup.patch_report.patched == ["base_model.model"]  # the Qwen2VLModel


# A scaled-down LLaVA with full multi-head attention, so SPEC's formulas apply as written.
D, LAYERS, INTER, VISION = 64, 2, 192, 32


def _mha_llava():
    return testing.tiny_llava(hidden_size=D, num_heads=4, num_kv_heads=4, intermediate_size=INTER)


def _expected_count(method, location):
    per_layer = {
        ("lora", "attention"): 128 * 4 * (D + D),
        ("lora", "mlp"): 128 * (2 * (D + INTER) + (INTER + D)),
        ("ia3", "attention"): D + D,
        ("ia3", "mlp"): INTER,
        ("adapter", "attention"): 2 * D * 256,
        ("adapter", "mlp"): 3 * 2 * D * 256,
    }
    if method == "prefix":  # embedding [20, d] -> Linear(d, d) -> tanh -> Linear(d, 2·L·d)
        return 20 * D + (D * D + D) + (D * 2 * LAYERS * D + 2 * LAYERS * D)
    parts = ("attention", "mlp") if location == "both" else (location,)
    return LAYERS * sum(per_layer[(method, part)] for part in parts)


# prefix tuning has no location choice (other locations are rejected, see the last test)
COMBINATIONS = [(m, loc) for m in ("lora", "ia3", "adapter") for loc in mllm.LOCATIONS]


@pytest.mark.parametrize("method, location", [*COMBINATIONS, ("prefix", "both")])
def test_trainable_parameter_counts_follow_spec(method, location):
    connector = VISION * D + D + D * D + D  # projector Linear(v, d) -> GELU -> Linear(d, d)
    frozen = mllm.paper_setup(_mha_llava(), method, connector=False, location=location)
    assert frozen.trainable_parameters() == _expected_count(method, location)
    tuned = mllm.paper_setup(_mha_llava(), method, connector=True, location=location)
    assert tuned.trainable_parameters() == _expected_count(method, location) + connector


def test_paper_configs_are_the_studys():
    model = testing.tiny_llava()
    lora = mllm.paper_config(model, "lora")
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (128, 256, 0.05)
    assert sorted(lora.target_modules) == sorted(mllm.target_modules(model, "lora"))
    ia3 = mllm.paper_config(model, "ia3")
    assert sorted(ia3.feedforward_modules) == sorted(mllm.ia3_feedforward_modules(model))
    adapter = mllm.paper_config(model, "adapter", "mlp")
    assert (adapter.bottleneck_size, adapter.non_linearity, adapter.dropout) == (256, "tanh", 0.05)
    assert (adapter.pre_modules, adapter.post_modules) == (("gate_proj", "up_proj"), ("down_proj",))
    prefix = mllm.paper_config(model, "prefix")
    assert (prefix.num_virtual_tokens, prefix.prefix_projection) == (20, True)
    assert mllm.PAPER_A_LEARNING_RATES == {
        "lora": 2e-4,
        "ia3": 2e-4,
        "adapter": 5e-5,
        "prefix": 1e-5,
    }
    assert mllm.PAPER_A_CONNECTOR_LR == 2e-5


def test_text_only_llm_without_connector():
    setup = mllm.paper_setup(testing.tiny_llama(), "ia3", connector=False)
    assert setup.trainable_parameters() == 2 * (32 + 32 + 192)
    assert [g["lr"] for g in setup.param_groups()] == [2e-4]


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="method must be one of"):
        mllm.paper_setup(testing.tiny_llava(), "bitfit")
    with pytest.raises(ValueError, match="location must be one of"):
        mllm.paper_setup(testing.tiny_llava(), "lora", location="everywhere")
    with pytest.raises(ValueError, match="location='mlp' does not apply to prefix"):
        mllm.paper_setup(testing.tiny_llava(), "prefix", location="mlp")
    with pytest.raises(TypeError, match="connector must be a bool"):
        mllm.paper_setup(testing.tiny_llava(), "lora", connector="yes")
    with pytest.raises(
        ValueError, match="connector of LlamaForCausalLM .*multi_modal_projector.*merger"
    ):
        mllm.paper_setup(testing.tiny_llama(), "lora", connector=True)
    with pytest.raises(ValueError, match="decoder layers .*embed_tokens"):
        mllm.paper_setup(torch.nn.Sequential(torch.nn.Linear(2, 2)), "lora")
    wrapped = mllm.paper_setup(testing.tiny_llava(), "lora").model
    with pytest.raises(ValueError, match="already carries PEFT"):
        mllm.paper_setup(wrapped, "ia3")


def test_prefix_on_a_model_without_mrope_patches_nothing_silently(recwarn):
    setup, _ = _setup("llava", "prefix", True)
    assert setup.patch_report.patched == [] and not setup.patch_report.skipped
    assert not [w for w in recwarn if "patched nothing" in str(w.message)]
