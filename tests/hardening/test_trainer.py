"""A patched PEFT LoRA model inside the Hugging Face ``Trainer`` (tiny LLaVA, CPU): it trains on the
fused path, gradient accumulation matches unpatched PEFT, checkpoints are plain PEFT adapters that
stock ``PeftModel.from_pretrained`` loads, resuming continues exactly, and ``SpiderCallback`` steps
its Spider once per optimizer step."""

import contextlib
import copy
import logging

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

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it
peft = pytest.importorskip("peft")

SEQ_LEN = 12  # bos + 4 image placeholders + 7 text tokens


class _Rows(torch.utils.data.Dataset):
    """The rows of one batch dict as a map-style dataset (what the Trainer samples from)."""

    def __init__(self, batch: dict) -> None:
        self.batch = batch
        n = len(next(iter(batch.values())))
        self.rows = [{k: v[i] for k, v in batch.items()} for i in range(n)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _llava_rows(model, n: int = 4) -> _Rows:
    """A small fixed synthetic LLaVA dataset: the rows of one seeded ``llava_batch``."""
    return _Rows(testing.llava_batch(model, batch_size=n, seq_len=SEQ_LEN, seed=0))


def _stack(rows):
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def _lora_llava():
    # Dropout off: PEFT and fastpeft draw dropout masks from different RNG streams.
    return testing.make_lora_model(testing.tiny_llava(), r=8, alpha=16, dropout=0.0)


def _args(out_dir, config_class=None, **overrides):
    """Quiet, seeded CPU arguments for a few steps (`config_class`: TrainingArguments, or a
    subclass such as TRL's SFTConfig)."""
    kwargs = dict(
        output_dir=str(out_dir),
        per_device_train_batch_size=2,
        max_steps=4,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        seed=0,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    kwargs.update(overrides)
    return (config_class or transformers.TrainingArguments)(**kwargs)


def _trainer(model, args, callbacks=None):
    return transformers.Trainer(
        model=model,
        args=args,
        train_dataset=_llava_rows(model),
        data_collator=_stack,
        callbacks=callbacks,
    )


def _losses(trainer) -> list[float]:
    return [row["loss"] for row in trainer.state.log_history if "loss" in row]


def _lora_params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _fallbacks(model) -> dict:
    from fastpeft.patching import base

    out = {}
    for m in model.modules():
        if base.is_patched(m):
            for reason, n in base.state_of(m).fallbacks.items():
                out[reason] = out.get(reason, 0) + n
    return out


def _assert_params_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys() and len(want) > 0
    for name in want:
        assert_close_fp32(got[name], want[name], rtol=1e-5, name=name)


def test_trainer_trains_on_the_fused_path(tmp_path):
    model = _lora_llava()
    fastpeft.patch(model, backend="torch")
    trainer = _trainer(model, _args(tmp_path, max_steps=10, learning_rate=2e-2))
    before = trainer.evaluate(_llava_rows(model))["eval_loss"]
    trainer.train()
    after = trainer.evaluate(_llava_rows(model))["eval_loss"]

    losses = _losses(trainer)
    assert len(losses) == 10 and all(torch.isfinite(torch.tensor(losses)))
    # Judged on the whole (training) set before and after, not on the noisier per-step losses:
    # four rows seen over and over must be fitted better.
    assert after < before - 0.1, (before, after, losses)
    # The Trainer's calls (loss kwargs, train mode, no autocast) all reached the fused kernels.
    assert fused_calls(model) > 0
    assert _fallbacks(model) == {}


def test_gradient_accumulation_matches_unpatched(tmp_path):
    plain = _lora_llava()
    fused = copy.deepcopy(plain)  # identical initial weights, copied before patching
    exact = testing.fp64_copy(plain)  # the reference the error budgets are measured against
    fastpeft.patch(fused, backend="torch")
    overrides = dict(per_device_train_batch_size=1, gradient_accumulation_steps=2, max_steps=3)

    runs = {}
    for name, model in (("plain", plain), ("fused", fused), ("exact", exact)):
        trainer = _trainer(model, _args(tmp_path / name, **overrides))
        trainer.train()
        runs[name] = (torch.tensor(_losses(trainer), dtype=torch.float64), _lora_params(model))

    assert fused_calls(fused) > 0 and fused_calls(plain) == 0
    (plain_losses, plain_params), (fused_losses, fused_params) = runs["plain"], runs["fused"]
    exact_losses, exact_params = runs["exact"]
    assert len(plain_losses) == len(fused_losses) == len(exact_losses) == 3
    # The Trainer logs losses as Python floats: all three are compared as fp64 numbers, so the
    # budget's floor is fp32's (the dtype the two fp32 runs computed them in).
    assert_within_reference_budget(
        fused_losses.float(), plain_losses.float(), exact_losses, name="loss"
    )
    assert_all_within_reference_budget(
        fused_params, plain_params, exact_params, what="param", norm="rms"
    )
    # The run did move the adapters (otherwise equality would prove nothing).
    initial = _lora_params(_lora_llava())
    assert any(not torch.equal(fused_params[n], initial[n]) for n in initial)


class _SnapshotOnSave(transformers.TrainerCallback):
    """The model's PEFT state dict at each checkpoint, keyed by global step."""

    def __init__(self) -> None:
        self.states = {}

    def on_save(self, args, state, control, model=None, **kwargs):
        sd = peft.get_peft_model_state_dict(model)
        self.states[state.global_step] = {k: v.detach().clone() for k, v in sd.items()}


def test_checkpoints_are_stock_peft_adapters(tmp_path, recwarn, caplog):
    from safetensors.torch import load_file

    model = _lora_llava()
    fastpeft.patch(model, backend="torch")
    snapshots = _SnapshotOnSave()
    args = _args(tmp_path, save_strategy="steps", save_steps=2)
    trainer = _trainer(model, args, callbacks=[snapshots])
    trainer.train()
    assert sorted(snapshots.states) == [2, 4]
    n_lora = len(_lora_params(model))  # every lora_A / lora_B weight, and nothing else

    for step, want in snapshots.states.items():
        saved = load_file(str(tmp_path / f"checkpoint-{step}" / "adapter_model.safetensors"))
        assert len(saved) == n_lora > 0 and saved.keys() == want.keys()
        for key in want:
            assert torch.equal(saved[key], want[key]), key
    # The last checkpoint is the trained model's state; the patch changed no names or values.
    final = peft.get_peft_model_state_dict(model)
    fastpeft.unpatch(model)
    assert final.keys() == peft.get_peft_model_state_dict(model).keys()
    for key, value in snapshots.states[4].items():
        assert torch.equal(value, final[key]), key

    recwarn.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loaded = peft.PeftModel.from_pretrained(testing.tiny_llava(), tmp_path / "checkpoint-4")
    messages = [str(w.message) for w in recwarn] + [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "missing" in m.lower() or "unexpected" in m.lower()], (
        messages
    )

    batch = testing.llava_batch(model, batch_size=2, seq_len=SEQ_LEN, seed=1)
    fastpeft.patch(model, backend="torch")
    model.eval()
    loaded.eval()
    with torch.no_grad():
        got, want = loaded(**batch).logits, model(**batch).logits
    assert_close_fp32(got, want, rtol=1e-5, name="logits")


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    args = _args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    full = _lora_llava()
    fastpeft.patch(full, backend="torch")
    _trainer(full, args).train()
    want = _lora_params(full)

    # A fresh process would rebuild the same model, patch it and resume from the checkpoint.
    resumed = _lora_llava()
    fastpeft.patch(resumed, backend="torch")
    resume_args = _args(tmp_path / "resumed", max_steps=4, save_strategy="no")
    trainer = _trainer(resumed, resume_args)
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert trainer.state.global_step == 4
    # Loading the adapter into the patched model kept the patch (and its fused path) in place.
    assert fused_calls(resumed) > 0 and _fallbacks(resumed) == {}
    _assert_params_close(_lora_params(resumed), want)
    initial = _lora_params(_lora_llava())
    assert any(not torch.equal(want[n], initial[n]) for n in initial)


def test_spider_callback_with_gradient_accumulation(tmp_path):
    model = _lora_llava()
    fastpeft.patch(model, backend="torch")
    spider = fastpeft.Spider(model)
    assert len(spider.params) == len([p for p in model.parameters() if p.requires_grad]) > 0
    args = _args(
        tmp_path, per_device_train_batch_size=1, gradient_accumulation_steps=2, max_steps=5
    )
    trainer = _trainer(model, args, callbacks=[fastpeft.SpiderCallback(spider)])
    trainer.train()

    losses = _losses(trainer)
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))
    assert fused_calls(model) > 0 and _fallbacks(model) == {}
    # One Spider step per optimizer step (not per micro-batch), and G gathered the gradients.
    assert spider.steps == trainer.state.global_step == 5
    assert all(bool(g.abs().sum() > 0) for g in spider.G)
    # Spider moved the adapters away from θ₀ only partly: some elements moved, some were pulled
    # back (c = 0 puts an element exactly on θ₀).
    moved = [p.detach() != t0 for p, t0 in zip(spider.params, spider.theta0, strict=True)]
    assert any(bool(m.any()) for m in moved)
    assert any(bool((~m).any()) for m in moved)


def test_spider_callback_checkpoints_resume_exactly(tmp_path):
    args = _args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    full = _lora_llava()
    fastpeft.patch(full, backend="torch")
    spider = fastpeft.Spider(full)
    _trainer(full, args, callbacks=[fastpeft.SpiderCallback(spider)]).train()
    want, want_G = _lora_params(full), [g.clone() for g in spider.G]
    assert (tmp_path / "checkpoint-2" / "spider.pt").is_file()

    def resume(callback_kwargs):
        # A fresh process: the same model rebuilt and patched, a new Spider (θ₀ of the rebuilt
        # weights, G = 0), resuming from checkpoint-2 into another output_dir.
        model = _lora_llava()
        fastpeft.patch(model, backend="torch")
        spider = fastpeft.Spider(model)
        callback = fastpeft.SpiderCallback(spider, **callback_kwargs)
        trainer = _trainer(model, _args(tmp_path / "resumed", max_steps=4), callbacks=[callback])
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
        return model, spider

    with pytest.raises(FileNotFoundError, match="resumes at step 2"):
        resume({})  # its output_dir has no checkpoint-2: the state's folder must be named
    model, spider = resume({"resume_from": tmp_path / "checkpoint-2"})
    assert spider.steps == 4
    # G continued from the checkpoint's (a Spider restarted at step 2 would miss two steps' G).
    for got, expected in zip(spider.G, want_G, strict=True):
        assert_close_fp32(got, expected, rtol=1e-5)
    _assert_params_close(_lora_params(model), want)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _trainer_log():
    """The INFO messages the Trainer's logger emits inside the block."""
    records = _Records()
    trainer_logger = logging.getLogger("transformers.trainer")
    trainer_logger.addHandler(records)
    level = trainer_logger.level
    trainer_logger.setLevel(logging.INFO)
    try:
        yield records.messages
    finally:
        trainer_logger.removeHandler(records)
        trainer_logger.setLevel(level)


def test_fastpeft_callback_patches_at_train_begin_like_patching_by_hand(tmp_path):
    by_hand = _lora_llava()
    switched = copy.deepcopy(by_hand)  # patched by the callback instead
    fastpeft.patch(by_hand, backend="torch")
    callback = fastpeft.FastPeftCallback(backend="torch")
    assert not any(fastpeft.is_patched(m) for m in switched.modules())
    with _trainer_log() as messages:
        runs = {}
        for name, model, callbacks in (
            ("by_hand", by_hand, None),
            ("switched", switched, [callback]),
        ):
            trainer = _trainer(model, _args(tmp_path / name, max_steps=3), callbacks=callbacks)
            trainer.train()
            runs[name] = (_losses(trainer), _lora_params(model))
        # A second train() (as when resuming) patches nothing twice and logs nothing again.
        _trainer(switched, _args(tmp_path / "again", max_steps=1), callbacks=[callback]).train()

    assert callback.report is not None and len(callback.report.patched) > 0
    assert [m for m in messages if m.startswith("fastpeft: patched")] == [str(callback.report)]
    # What ran in the first step, once: one call per patched layer (batch 2, no accumulation).
    assert [m for m in messages if m.startswith("fastpeft: first step")] == [
        f"fastpeft: first step: all {len(callback.report.patched)} patched-layer calls fused"
    ]
    assert fused_calls(switched) > 0 and _fallbacks(switched) == {}
    # The callback does exactly what patching by hand does (whose numbers the gradient
    # accumulation test above judges against unpatched PEFT and fp64): the same run, bit for bit.
    (want_losses, want), (got_losses, got) = runs["by_hand"], runs["switched"]
    assert got_losses == want_losses and len(got_losses) == 3
    assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in want)


def test_fastpeft_callback_warns_when_first_step_calls_fell_back(tmp_path):
    # bf16 mixed precision (autocast) over an fp32 model: the fused path cannot take the calls,
    # and the user hears it after the first step instead of training slowly without knowing.
    model = _lora_llava()
    callback = fastpeft.FastPeftCallback(backend="torch")
    with _trainer_log() as messages:
        _trainer(model, _args(tmp_path, max_steps=2, bf16=True), callbacks=[callback]).train()
    n = len(callback.report.patched)
    assert fused_calls(model) == 0
    assert [m for m in messages if m.startswith("fastpeft: first step")] == [
        f"fastpeft: first step: {n} of {n} patched-layer calls took PEFT's forward: autocast "
        "to torch.bfloat16 with a torch.float32 input or weight (fused under autocast when both "
        f"are in its dtype: load the model in it) ({n})"
    ]


def test_fastpeft_callback_patches_each_model_of_model_init(tmp_path):
    # model_init (as in hyperparameter search): every train() builds a fresh model, and each
    # must be patched and reported, not only the first.
    callback = fastpeft.FastPeftCallback(backend="torch")
    with _trainer_log() as messages:
        trainer = transformers.Trainer(
            model_init=_lora_llava,
            args=_args(tmp_path, max_steps=1),
            train_dataset=_llava_rows(_lora_llava()),
            data_collator=_stack,
            callbacks=[callback],
        )
        models = []
        for _ in range(2):
            trainer.train()
            models.append(trainer.model)
    assert models[0] is not models[1]
    for model in models:
        assert fused_calls(model) > 0 and _fallbacks(model) == {}
    assert len([m for m in messages if m.startswith("fastpeft: patched")]) == 2


def test_fastpeft_callback_with_spider_and_gradient_checkpointing(tmp_path):
    model = _lora_llava()
    spider = fastpeft.Spider(model)
    callbacks = [fastpeft.FastPeftCallback(backend="torch"), fastpeft.SpiderCallback(spider)]
    args = _args(
        tmp_path,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=2,
        max_steps=3,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    trainer = _trainer(model, args, callbacks=callbacks)
    trainer.train()
    assert all(torch.isfinite(torch.tensor(_losses(trainer))))
    assert fused_calls(model) > 0 and _fallbacks(model) == {}
    assert spider.steps == trainer.state.global_step == 3


def test_fastpeft_callback_checks_its_arguments():
    with pytest.raises(ValueError, match="backend"):
        fastpeft.FastPeftCallback(backend="fast")
    with pytest.raises(TypeError, match="strict must be a bool"):
        fastpeft.FastPeftCallback(strict="yes")


def test_first_step_summary_levels():
    from fastpeft.patching import cpu_rule
    from fastpeft.trainer_callback import first_step_summary

    def level(fused, fallbacks):
        summary = first_step_summary({"layer": {"fused": fused, "fallbacks": fallbacks}})
        return None if summary is None else summary[0]

    assert first_step_summary({}) is None
    assert level(0, {}) is None  # compiled calls are not counted: nothing to say
    assert level(3, {}) == logging.INFO
    assert level(1, {cpu_rule.REASON: 2}) == logging.INFO  # the CPU rule's choice is by design
    assert level(1, {"adapters disabled": 1, cpu_rule.REASON: 1}) == logging.WARNING
