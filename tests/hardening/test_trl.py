"""fastpeft under TRL's ``SFTTrainer`` (TRL from PyPI, CPU): vision-language SFT on raw chats and
images with the model's processor, ``peft_config`` handed to TRL (which wraps the model itself)
and ``fastpeft.FastPeftCallback`` switching the fused path on. Tiny LLaVA and Qwen2-VL.

Each run is judged against the same run unpatched (stock PEFT inside TRL) and an fp64 run of it:
the losses and trained adapters must be within the fp32 error budget of the fp64 reference, the
fused kernels must have run every LoRA call, and TRL's checkpoints must be adapters that stock
``PeftModel.from_pretrained`` loads.
"""

import pytest
import torch

import fastpeft
from fastpeft import testing
from fastpeft.testing import (
    assert_all_within_reference_budget,
    assert_close_fp32,
    assert_within_reference_budget,
)

from ..mllm.helpers import fused_calls
from .test_trainer import _args, _fallbacks, _lora_params, _losses

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
peft = pytest.importorskip("peft")

FAMILIES = {"llava": testing.tiny_llava, "qwen2_vl": testing.tiny_qwen2_vl}


def _lora_config(model) -> "peft.LoraConfig":
    # Non-zero B from the start (init_lora_weights=False): an identity LoRA branch would let a
    # wrong fused kernel pass the first step. Dropout off: PEFT and fastpeft draw masks from
    # different RNG streams. The language model's linears only (the vision tower's stay frozen).
    return peft.LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=testing.language_model_lora_targets(model),
        init_lora_weights=False,
    )


def _sft_args(out_dir, **overrides):
    # TRL's defaults kept where they matter here: gradient checkpointing on. bf16 autocast (its
    # default) only where a test asks: the fp32 runs are judged with fp32's error budget.
    overrides = dict(gradient_accumulation_steps=2, max_steps=3, bf16=False) | overrides
    return _args(out_dir, trl.SFTConfig, **overrides)


def _sft(make, out_dir, callbacks=None, dtype=torch.float32, **overrides):
    """A fresh tiny model of `make` in `dtype`, wrapped by TRL from a peft_config and trained."""
    model = make(dtype=dtype)
    processor = testing.tiny_processor(model)
    rows = testing.caption_chats(8, testing.processor_image_size(model.config), seed=0)
    trainer = trl.SFTTrainer(
        model=model,
        args=_sft_args(out_dir, **overrides),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=processor,
        peft_config=_lora_config(model),
        callbacks=callbacks,
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sft_trainer_with_peft_config_matches_unpatched(family, tmp_path):
    make = FAMILIES[family]
    switch = fastpeft.FastPeftCallback(backend="torch")
    runs = {
        "plain": _sft(make, tmp_path / "plain"),
        "fused": _sft(make, tmp_path / "fused", callbacks=[switch]),
        "exact": _sft(make, tmp_path / "exact", dtype=torch.float64),
    }
    plain, fused = runs["plain"].model, runs["fused"].model
    # TRL wrapped the model from peft_config; the callback patched every LoRA layer it made, and
    # every call of the run (TRL's gradient checkpointing included: on by default) went fused.
    assert isinstance(fused, peft.PeftModel) and fused.peft_config["default"].r == 8
    assert runs["fused"].args.gradient_checkpointing
    assert len(switch.report.patched) == len(testing.language_model_lora_targets(fused)) > 0
    assert switch.report.skipped == {}
    assert fused_calls(fused) > 0 and _fallbacks(fused) == {} and fused_calls(plain) == 0

    losses = {k: torch.tensor(_losses(t), dtype=torch.float64) for k, t in runs.items()}
    assert len(losses["fused"]) == 3 and losses["fused"][-1] < losses["fused"][0]
    assert_within_reference_budget(
        losses["fused"].float(), losses["plain"].float(), losses["exact"], name="loss"
    )
    params = {k: _lora_params(t.model) for k, t in runs.items()}
    assert_all_within_reference_budget(
        params["fused"], params["plain"], params["exact"], what="param", norm="rms"
    )


def test_sft_trainer_checkpoints_load_in_stock_peft(tmp_path):
    switch = fastpeft.FastPeftCallback(backend="torch")
    trainer = _sft(testing.tiny_llava, tmp_path, callbacks=[switch], save_strategy="steps",
                   save_steps=3)  # fmt: skip
    model = trainer.model
    assert fused_calls(model) > 0

    loaded = peft.PeftModel.from_pretrained(testing.tiny_llava(), tmp_path / "checkpoint-3")
    saved = peft.get_peft_model_state_dict(loaded)
    want = peft.get_peft_model_state_dict(model)
    assert saved.keys() == want.keys() and len(want) == len(_lora_params(model)) > 0
    assert all(torch.equal(saved[k], want[k].cpu()) for k in want)

    rows = testing.caption_chats(2, testing.processor_image_size(model.config), seed=1)
    processor = testing.tiny_processor(model)
    batch = processor(
        images=[r["images"] for r in rows],
        text=[processor.apply_chat_template(r["messages"]) for r in rows],
        return_tensors="pt",
        padding=True,
    )
    model.eval()
    loaded.eval()
    with torch.no_grad():
        got, reference = loaded(**batch).logits, model(**batch).logits
    assert_close_fp32(got, reference, rtol=1e-5, name="logits")


def test_spider_adamw_through_optimizer_cls_and_kwargs(tmp_path):
    """SPIDER when TRL builds the PEFT model: the Trainer builds SpiderAdamW itself, on the
    adapters TRL made, from ``optimizer_cls_and_kwargs``; the fused path changes nothing."""
    spider_adamw = (fastpeft.SpiderAdamW, {"lr": 5e-3, "backend": "torch"})
    runs = {}
    for name, callbacks in (("plain", None), ("fused", [fastpeft.FastPeftCallback("torch")])):
        model = testing.tiny_llava()
        trainer = trl.SFTTrainer(
            model=model,
            args=_sft_args(tmp_path / name),
            train_dataset=datasets.Dataset.from_list(
                testing.caption_chats(8, testing.processor_image_size(model.config))
            ),
            processing_class=testing.tiny_processor(model),
            peft_config=_lora_config(model),
            callbacks=callbacks,
            optimizer_cls_and_kwargs=spider_adamw,
        )
        trainer.train()
        runs[name] = trainer
    fused = runs["fused"]
    assert isinstance(fused.optimizer.optimizer, fastpeft.SpiderAdamW)
    assert fused.optimizer.optimizer.spider.steps == fused.state.global_step == 3
    assert fused_calls(fused.model) > 0 and _fallbacks(fused.model) == {}
    plain_params, fused_params = _lora_params(runs["plain"].model), _lora_params(fused.model)
    assert fused_params.keys() == plain_params.keys()
    for name in plain_params:
        # Two fp32 runs of the same three steps differing only in rounding order (SPEC §7).
        assert_close_fp32(fused_params[name], plain_params[name], rtol=1e-4, name=name)
    assert _losses(fused) == pytest.approx(_losses(runs["plain"]), rel=1e-5)


def test_sft_trainer_bf16_autocast_default_takes_the_fused_path(tmp_path):
    """TRL's default mixed precision (bf16=True: autocast) over a model loaded in bf16: every
    call fused, within the bf16 error budget of the same unpatched run against fp64."""
    switch = fastpeft.FastPeftCallback(backend="torch")
    make = FAMILIES["llava"]
    runs = {
        "plain": _sft(make, tmp_path / "plain", dtype=torch.bfloat16, bf16=True),
        "fused": _sft(make, tmp_path / "fused", [switch], dtype=torch.bfloat16, bf16=True),
        "exact": _sft(make, tmp_path / "exact", dtype=torch.float64),
    }
    fused = runs["fused"].model
    assert runs["fused"].args.bf16 and next(fused.parameters()).dtype == torch.bfloat16
    assert fused_calls(fused) > 0 and _fallbacks(fused) == {}
    losses = {k: torch.tensor(_losses(t), dtype=torch.float64) for k, t in runs.items()}
    assert_within_reference_budget(
        losses["fused"].float(), losses["plain"].float(), losses["exact"], name="loss"
    )
    params = {k: _lora_params(t.model) for k, t in runs.items()}
    # Adapters stay fp32 in both bf16 runs (PEFT's autocast_adapter_dtype); compared as fp32.
    assert_all_within_reference_budget(
        params["fused"], params["plain"], params["exact"], what="param", norm="rms"
    )
