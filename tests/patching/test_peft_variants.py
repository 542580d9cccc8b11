"""Every PEFT LoRA / IA3 configuration option and layer variant that can change a Linear layer's
forward, one tiny real model each: the layers are either fused and equal to unpatched PEFT
(logits and every gradient, fp32) or skipped with a reason in `report.skipped` and still equal.

Each case builds the same model twice under one seed (one stays plain PEFT, one is patched) so
stateful variants (VeLoRA's projections, Arrow's prototypes, MonteCLoRA's sampling) see the same
first forward in both. Adapter weights are perturbed after init, so every B is non-zero and a
fused path that dropped or mis-scaled the low-rank branch would show. An option the installed PEFT
does not have is skipped (pytest.skip, with the reason), never counted as a pass.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import fastpeft
from fastpeft import testing
from fastpeft.patching import base
from fastpeft.testing import assert_close_fp32

LLAMA_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Built:
    model: nn.Module
    batch: dict
    train: bool = True


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], Built]
    reason: str | None = None  # None: every layer fused; else: every skipped layer gives it
    patched: int | None = None  # how many layers are fused (None: all of them / none skipped)


# --- what the installed PEFT has ---------------------------------------------------------------


def _peft(module: str, name: str):
    """peft's `module.name`, or skip the case when the installed PEFT lacks it."""
    import peft

    found = getattr(importlib.import_module(module), name, None)
    if found is None:
        pytest.skip(f"the installed peft {peft.__version__} has no {module}.{name}")
    return found


def _lora_option(name: str) -> None:
    import peft
    from peft import LoraConfig

    if name not in {f.name for f in dataclasses.fields(LoraConfig)}:
        pytest.skip(f"the installed peft {peft.__version__} has no LoraConfig.{name}")


def _needs_module(name: str, why: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError:
        pytest.skip(f"{why} needs {name}, which is not installed")


# --- builders ------------------------------------------------------------------------------------


def _perturb(model: nn.Module) -> None:
    """Move every LoRA factor off its init (B = 0, A = 0 for MiCA) and every IA3 vector off 1."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            noise = torch.randn(param.shape, generator=g).to(param.dtype)
            if ".lora_A." in name or ".lora_B." in name:
                param.add_(0.05 * noise)
            elif ".ia3_l." in name:
                param.copy_(1.0 + 0.3 * noise)


def _llama(layers: int = 1) -> nn.Module:
    return testing.tiny_llama(num_layers=layers)


def _lora(
    llama_layers: int = 1, targets=None, eval_mode: bool = False, **lora_kwargs
) -> Callable[[Path], Built]:
    def build(_: Path) -> Built:
        base_model = _llama(llama_layers)
        model = testing.make_lora_model(base_model, targets=targets, **lora_kwargs)
        return Built(model, testing.causal_lm_batch(model), train=not eval_mode)

    return build


def _needs_option(name: str, builder: Callable[[], Callable[[Path], Built]]):
    def build(tmp: Path) -> Built:
        _lora_option(name)
        return builder()(tmp)

    return build


def _biased_llama() -> nn.Module:
    """A tiny Qwen2 causal LM: Llama's layout with biases on q/k/v (o and the MLP have none)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Qwen2ForCausalLM(config)


def _biased(bias: str) -> Callable[[Path], Built]:
    def build(_: Path) -> Built:
        model = testing.make_lora_model(_biased_llama(), targets=LLAMA_LINEARS, bias=bias)
        return Built(model, testing.causal_lm_batch(model))

    return build


def _gpt2(config_cls: str, **kwargs) -> Callable[[Path], Built]:
    """GPT-2's Conv1D layers (weights stored [in, out]): PEFT's fan_in_fan_out=True case."""

    def build(_: Path) -> Built:
        from peft import get_peft_model
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            n_embd=32, n_layer=1, n_head=2, vocab_size=64, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0,
        )  # fmt: skip
        gpt2 = GPT2LMHeadModel(config)
        peft_config = getattr(importlib.import_module("peft"), config_cls)(
            target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True, **kwargs
        )
        model = get_peft_model(gpt2, peft_config)
        return Built(model, testing.causal_lm_batch(model))

    return build


def _bdlora(_: Path) -> Built:
    bd = _peft("peft", "BdLoraConfig")(
        target_modules_bd_a=["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"],
        target_modules_bd_b=["o_proj", "down_proj"],
        nblocks=2,
    )
    return _lora(use_bdlora=bd)(_)


def _config_variant(option: str, config_name: str, **config_kwargs):
    def build(tmp: Path) -> Built:
        _lora_option(option)
        config = _peft("peft", config_name)(**config_kwargs)
        return _lora(**{option: config})(tmp)

    return build


def _alora(_: Path) -> Built:
    _lora_option("alora_invocation_tokens")
    built = _lora(alora_invocation_tokens=[5, 6])(_)
    for key in ("input_ids", "labels"):  # the invocation sequence, mid-row: aLoRA acts after it
        built.batch[key][:, 6:8] = torch.tensor([5, 6])
    return built


def _arrow(tmp: Path) -> Built:
    _lora_option("arrow_config")
    create_arrow_model = _peft("peft", "create_arrow_model")
    arrow_config = _peft("peft", "ArrowConfig")(top_k=1, rng_seed=0)
    paths = []
    for i in range(2):  # two task experts, saved as PEFT saves them
        expert = testing.make_lora_model(_llama(), r=4, targets=LLAMA_LINEARS, seed=i)
        _perturb(expert)
        expert.save_pretrained(tmp / f"expert{i}")
        paths.append(str(tmp / f"expert{i}"))
    model = create_arrow_model(_llama(), paths, arrow_config)
    return Built(model, testing.causal_lm_batch(model))


def _mica(_: Path) -> Built:
    # MiCA: SVD init (B = minor singular vectors, frozen; A = 0); its forward is vanilla LoRA's.
    _peft("peft.tuners.lora.variants", "MiCALinearVariant")
    return _lora(init_lora_weights="mica")(_)


def _corda(_: Path) -> Built:
    preprocess_corda = _peft("peft.tuners.lora.corda", "preprocess_corda")
    from peft import LoraConfig
    from peft.tuners.lora.config import CordaConfig

    base_model = _llama()
    config = LoraConfig(
        r=8, target_modules=LLAMA_LINEARS, init_lora_weights="corda", corda_config=CordaConfig()
    )
    batch = testing.causal_lm_batch(base_model, batch_size=1)  # CorDA's hooks take one row
    with torch.no_grad():
        preprocess_corda(base_model, config, run_model=lambda: base_model(**batch))
    model = testing.make_lora_model(
        base_model, targets=LLAMA_LINEARS, init_lora_weights="corda", corda_config=CordaConfig()
    )
    return Built(model, testing.causal_lm_batch(model))


def _lora_ga(_: Path) -> Built:
    preprocess_loraga = _peft("peft", "preprocess_loraga")
    from peft import LoraConfig, LoraGAConfig

    base_model = _llama()
    config = LoraConfig(
        r=8,
        target_modules=LLAMA_LINEARS,
        init_lora_weights="lora_ga",
        lora_ga_config=LoraGAConfig(),
    )
    batch = testing.causal_lm_batch(base_model)
    preprocess_loraga(base_model, config, train_step=lambda: base_model(**batch).loss.backward())
    base_model.zero_grad(set_to_none=True)
    model = testing.make_lora_model(
        base_model,
        targets=LLAMA_LINEARS,
        init_lora_weights="lora_ga",
        lora_ga_config=LoraGAConfig(),
    )
    return Built(model, testing.causal_lm_batch(model))


def _eva(_: Path) -> Built:
    initialize = _peft("peft", "initialize_lora_eva_weights")
    from peft import EvaConfig

    model = testing.make_lora_model(
        _llama(), targets=LLAMA_LINEARS, init_lora_weights="eva", eva_config=EvaConfig(rho=1.0)
    )
    batches = [testing.causal_lm_batch(model, seed=s) for s in range(4)]
    initialize(model, dataloader=batches, show_progress_bar=False)
    return Built(model, testing.causal_lm_batch(model))


def _loftq(_: Path) -> Built:
    _needs_module("bitsandbytes", "LoftQ initialisation")
    if not torch.cuda.is_available():
        # peft/utils/loftq_utils.py (0.21) quantises on a fixed compute device, "xpu" or "cuda".
        pytest.skip("PEFT's loftq_init runs on CUDA or XPU only")
    from peft import LoftQConfig

    return _lora(init_lora_weights="loftq", loftq_config=LoftQConfig(loftq_bits=4))(_)


def _megatron(_: Path) -> Built:
    _needs_module("megatron.core", "LoRA on Megatron's parallel linears (megatron_config)")
    pytest.skip("Megatron's parallel layers need an initialised model-parallel group")


def _hotswap(_: Path) -> Built:
    prepare = _peft("peft.utils.hotswap", "prepare_model_for_compiled_hotswap")
    built = _lora()(_)
    prepare(built.model, target_rank=16)  # scalings become 0-d tensors, ranks padded to 16
    return built


def _two_active(_: Path) -> Built:
    from peft import LoraConfig

    built = _lora(targets=LLAMA_LINEARS)(_)
    second = LoraConfig(r=4, target_modules=LLAMA_LINEARS, init_lora_weights=False)
    built.model.add_adapter("second", second)
    built.model.base_model.set_adapter(["default", "second"])
    return built


def _conv_target(_: Path) -> Built:
    llava = testing.tiny_llava()
    patch_embedding = next(n for n, _ in llava.named_modules() if n.endswith("patch_embedding"))
    targets = testing.language_model_lora_targets(llava) + [patch_embedding]
    model = testing.make_lora_model(llava, targets=targets)
    return Built(model, testing.llava_batch(model))


def _target_parameters(_: Path) -> Built:
    _lora_option("target_parameters")
    return _lora(targets=[], target_parameters=["mlp.down_proj.weight"])(_)


def _ia3(targets=("k_proj", "v_proj", "down_proj"), feedforward=("down_proj",), adapters=1, **kw):
    def build(_: Path) -> Built:
        from peft import IA3Config, get_peft_model

        def config():
            return IA3Config(
                target_modules=list(targets), feedforward_modules=list(feedforward), **kw
            )

        model = get_peft_model(_llama(), config())
        if adapters > 1:
            model.add_adapter("second", config())
            model.base_model.set_adapter(["default", "second"])
        return Built(model, testing.causal_lm_batch(model))

    return build


LORA_CASES: dict[str, Case] = {
    # Fused: options that only pick targets, set r / alpha, or initialise the factors.
    "default": Case(_lora()),
    "use_rslora": Case(_lora(use_rslora=True)),
    "rank_pattern+alpha_pattern": Case(
        _lora(
            targets=LLAMA_LINEARS,
            rank_pattern={"q_proj": 4, "down_proj": 16},
            alpha_pattern={"v_proj": 3},
        )  # fmt: skip
    ),
    "lora_dropout(eval)": Case(_lora(dropout=0.1, eval_mode=True)),
    "fan_in_fan_out(nn.Linear)": Case(_lora(fan_in_fan_out=True)),  # PEFT resets it to False
    "bias=none(biased base)": Case(_biased("none")),
    "target lm_head": Case(_lora(targets=[*LLAMA_LINEARS, "lm_head"]), patched=8),
    "target_modules=all-linear": Case(_lora(targets="all-linear"), patched=7),
    "target_modules regex": Case(_lora(targets=r".*\.(q_proj|v_proj)$"), patched=2),
    "exclude_modules": Case(
        _lora(targets=LLAMA_LINEARS, exclude_modules=["model.layers.0.mlp.down_proj"]), patched=6
    ),
    "layers_to_transform": Case(
        _lora(llama_layers=2, targets=LLAMA_LINEARS, layers_to_transform=[1]), patched=7
    ),
    "layer_replication": Case(
        _needs_option(
            "layer_replication",
            lambda: _lora(
                llama_layers=2, targets=LLAMA_LINEARS, layer_replication=[[0, 2], [1, 2]]
            ),
        ),
        patched=21,
    ),
    "modules_to_save": Case(_lora(modules_to_save=["lm_head"])),
    "trainable_token_indices": Case(
        _needs_option("trainable_token_indices", lambda: _lora(trainable_token_indices=[3, 4, 5]))
    ),
    "inference_mode": Case(_lora(inference_mode=True)),
    "use_qalora(nn.Linear)": Case(  # QALoRA exists for GPTQ layers only; on nn.Linear, no effect
        _needs_option("use_qalora", lambda: _lora(use_qalora=True, qalora_group_size=16))
    ),
    "init=True(B=0)": Case(_lora(init_lora_weights=True)),
    "init=gaussian": Case(_lora(init_lora_weights="gaussian")),
    "init=olora": Case(_lora(targets=LLAMA_LINEARS, init_lora_weights="olora")),
    "init=pissa": Case(_lora(targets=LLAMA_LINEARS, init_lora_weights="pissa")),
    "init=pissa_niter_2": Case(_lora(targets=LLAMA_LINEARS, init_lora_weights="pissa_niter_2")),
    "init=orthogonal": Case(
        _needs_option("init_lora_weights", lambda: _lora(init_lora_weights="orthogonal"))
    ),
    "init=eva": Case(_eva),
    "init=corda": Case(_corda),
    "init=lora_ga": Case(_lora_ga),
    "init=loftq": Case(_loftq),
    "init=mica(MiCALinearVariant)": Case(_mica),
    "hotswap(0-d tensor scaling)": Case(_hotswap),
    # Skipped with a reason: PEFT's own forward runs.
    "use_dora": Case(_lora(use_dora=True), reason="LoRA variant DoraLinearVariant"),
    "lora_bias": Case(_lora(lora_bias=True), reason="lora_bias=True"),
    "use_bdlora": Case(_bdlora, reason="BlockDiagonalLinear, not a plain torch.nn.Linear"),
    "alora_invocation_tokens": Case(_alora, reason="LoRA variant ALoraLinearVariant"),
    "velora_config": Case(
        _config_variant("velora_config", "VeloraConfig", num_groups=4),
        reason="LoRA variant VeloraLinearVariant",
    ),
    "monteclora_config": Case(
        _config_variant("monteclora_config", "MontecloraConfig"),
        reason="LoRA variant MontecloraLinearVariant",
    ),
    "kasa_config": Case(
        _config_variant("kasa_config", "KasaConfig"), reason="LoRA variant KasaLinearVariant"
    ),
    "arrow_config": Case(_arrow, reason="LoRA variant ArrowLinearVariant"),
    "bias=all": Case(_biased("all"), reason="base layer weight or bias is trainable", patched=4),
    "bias=lora_only": Case(
        _biased("lora_only"), reason="base layer weight or bias is trainable", patched=4
    ),
    "fan_in_fan_out(Conv1D)": Case(_gpt2("LoraConfig"), reason="fan_in_fan_out=True"),
    "rank>256": Case(_lora(r=300)),  # beyond the Triton kernels: the PyTorch path takes it
    "target_parameters": Case(_target_parameters, reason="ParamWrapper is not supported"),
    "target embed_tokens": Case(
        _lora(targets=[*LLAMA_LINEARS, "embed_tokens"]),
        reason="Embedding is not supported",
        patched=7,
    ),  # fmt: skip
    "target Conv2d": Case(_conv_target, reason="Conv2d is not supported", patched=14),
    "two active adapters": Case(_two_active, reason="2 active adapters"),
    "megatron_config": Case(_megatron),
}

IA3_CASES: dict[str, Case] = {
    "ia3": Case(_ia3()),
    "ia3 feedforward everywhere": Case(_ia3(targets=LLAMA_LINEARS, feedforward=LLAMA_LINEARS)),
    "ia3 init_ia3_weights=False": Case(_ia3(init_ia3_weights=False)),
    "ia3 modules_to_save": Case(_ia3(modules_to_save=["lm_head"])),
    "ia3 fan_in_fan_out(nn.Linear)": Case(_ia3(fan_in_fan_out=True)),  # PEFT resets it to False
    "ia3 fan_in_fan_out(Conv1D)": Case(
        _gpt2("IA3Config", feedforward_modules=["c_fc"]), reason="fan_in_fan_out=True"
    ),
    "ia3 two active adapters": Case(_ia3(adapters=2), reason="2 active adapters"),
    "ia3 exclude_modules": Case(
        _ia3(exclude_modules=["model.layers.0.self_attn.k_proj"]), patched=2
    ),
    "ia3 inference_mode": Case(_ia3(inference_mode=True)),
}

CASES = {**LORA_CASES, **IA3_CASES}


# --- the check -----------------------------------------------------------------------------------


def _build(case: Case, directory: Path) -> Built:
    directory.mkdir()
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")  # PEFT's notes on odd configs (fan_in_fan_out, ...)
        torch.manual_seed(0)
        built = case.build(directory)
        _perturb(built.model)
    return built


def _run(built: Built) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model = built.model.train(built.train)
    model.zero_grad(set_to_none=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)  # the same draws for PEFT's own sampling in both models
        out = model(**built.batch)
        if out.loss.requires_grad:  # not with inference_mode=True or loaded (frozen) experts
            out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads


@pytest.mark.parametrize("case_id", list(CASES))
def test_option_is_fused_or_skipped_and_equals_peft(case_id, tmp_path):
    case = CASES[case_id]
    reference = _build(case, tmp_path / "reference")
    subject = _build(case, tmp_path / "subject")
    want_logits, want_grads = _run(reference)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "patched nothing" for the all-skipped cases
        report = fastpeft.patch(subject.model, backend="torch")
    assert report.kinds, "the case built no PEFT layer"
    if case.reason is None:
        assert not report.skipped, report.skipped
    else:
        assert report.skipped
        for name, reasons in report.skipped.items():
            assert any(case.reason in r for r in reasons), (name, reasons)
    assert len(report.patched) == (case.patched if case.patched is not None else
                                   (len(report.kinds) if case.reason is None else 0))  # fmt: skip

    got_logits, got_grads = _run(subject)
    modules = dict(subject.model.named_modules())
    for name in report.patched:  # the fused path really ran, with no per-call fallback
        state = base.state_of(modules[name])
        assert state.fused_calls >= 1 and not state.fallbacks, (name, state)
    assert not any(base.is_patched(modules[name]) for name in report.skipped)

    assert_close_fp32(got_logits, want_logits, rtol=1e-4, name="logits")
    assert got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        assert_close_fp32(got_grads[name], grad, rtol=1e-4, name=name)


# --- layouts no config option produces: custom layer classes, quantised-looking weights ----------


def _custom_lora_linear_model() -> nn.Module:
    """LoRA through PEFT's custom-module API with a subclass of its own lora.Linear (the shape of
    TorchaoLoraLinear: PEFT's forward over a weight the fused kernels must not read)."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.layer import Linear as LoraLinear

    class SubclassedLoraLinear(LoraLinear):
        pass

    config = LoraConfig(r=4, target_modules=LLAMA_LINEARS, init_lora_weights=False)
    if not hasattr(config, "_register_custom_module"):
        pytest.skip("the installed peft has no LoraConfig._register_custom_module")
    config._register_custom_module({nn.Linear: SubclassedLoraLinear})
    return get_peft_model(_llama(), config)


class _MarkedTensor(torch.Tensor):
    """A trivial tensor subclass standing in for a quantised weight (torchao, float8, ...)."""


def test_subclassed_lora_linear_and_tensor_subclass_weights_are_skipped():
    model = _custom_lora_linear_model()
    with pytest.warns(UserWarning, match="patched nothing"):
        report = fastpeft.patch(model, backend="torch")
    assert len(report.skipped) == 7
    for reasons in report.skipped.values():
        assert reasons == [
            "LoRA layer type SubclassedLoraLinear subclasses peft's lora.Linear (quantised or "
            "custom); only lora.Linear itself is supported"
        ]

    model = testing.make_lora_model(_llama())
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    weight = layer.base_layer.weight
    layer.base_layer.weight = nn.Parameter(weight.detach().as_subclass(_MarkedTensor), False)
    report = fastpeft.patch(model, backend="torch")
    (name,) = report.skipped
    assert name.endswith("self_attn.q_proj") and len(report.patched) == 6
    assert report.skipped[name] == [
        "base weight is a _MarkedTensor tensor subclass (quantised?), not a plain tensor"
    ]


def test_factors_replaced_after_patching_fall_back_per_call():
    # The layout is re-checked on every call: a factor swapped for another module type after
    # patch() (as BD-LoRA's init or a hot-swap's padding do) routes that call to PEFT.
    from peft.tuners.lora.variants import BlockDiagonalLinear

    model = testing.make_lora_model(_llama())
    batch = testing.causal_lm_batch(model)
    fastpeft.patch(model, backend="torch")
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    block = BlockDiagonalLinear(64, 8, nblocks=2)
    layer.lora_A["default"] = block
    with torch.no_grad():
        got = model(**batch).logits
        fallbacks = dict(base.state_of(layer).fallbacks)
        fastpeft.unpatch(model)
        want = model(**batch).logits
    reason = "lora_A is BlockDiagonalLinear, not a plain torch.nn.Linear (a LoRA variant's layout)"
    assert fallbacks == {reason: 1}
    assert_close_fp32(got, want, rtol=1e-4, name="logits")


def test_disabled_input_casting_falls_back_to_peft_per_call():
    # peft.helpers.disable_input_dtype_casting: PEFT then feeds a bf16 x to fp32 factors and
    # raises; the fused path, which casts, must not quietly succeed instead.
    disable_input_dtype_casting = _peft("peft.helpers", "disable_input_dtype_casting")
    model = testing.make_lora_model(testing.tiny_llama(num_layers=1, dtype=torch.bfloat16))
    batch = testing.causal_lm_batch(model)
    fastpeft.patch(model, backend="torch")
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.lora_A["default"].weight.dtype == torch.float32
    with torch.no_grad():
        model(**batch)  # casting on: fused
        with disable_input_dtype_casting(model), pytest.raises(RuntimeError):
            model(**batch)
    reason = "cast_input_dtype_enabled=False with an input dtype other than the adapter's"
    state = base.state_of(layer)
    assert state.fused_calls == 1 and dict(state.fallbacks) == {reason: 1}
