"""The Hugging Face Trainer with DeepSpeed ZeRO-2 and ZeRO-3 (``TrainingArguments(deepspeed=...)``)
on 2 CPU processes (gloo), patched by FastPeftCallback at on_train_begin, i.e. after DeepSpeed
wrapped (and under ZeRO-3 partitioned) the model: the fused path runs and the trained LoRA
weights equal one unpatched process on the whole batch. SpiderCallback stops at the first
optimizer step with a message pointing to DeepSpeedSpider.

accelerate 1.15 finds no distributed backend for DeepSpeed on a machine without an accelerator
(it takes the process count from a device backend), so the Trainer would size DeepSpeed's batch
for 1 process and DeepSpeed rejects it ("train_batch_size is not equal to micro_batch_per_gpu *
gradient_acc_step * world_size 2 != 2 * 1 * 2"); `use_cpu=True` turns DeepSpeed off instead.
The workers set accelerate's state up themselves over the gloo group (`_accelerate_state`); on a
GPU machine the Trainer does this on its own.
"""

import os

import pytest
import torch

import fastpeft
from fastpeft import testing

from ..deepspeed_gloo import TIMEOUT, requires_deepspeed, setup_worker
from ..gloo import spawn_gloo
from ..mllm.helpers import fused_calls
from .test_trainer import _Rows, _stack

pytestmark = [pytest.mark.slow, requires_deepspeed]

WORLD, PER_DEVICE, STEPS, LR = 2, 2, 3, 1e-2
STAGES = (2, 3)


def _global_rows() -> _Rows:
    """One global batch: 2 rows per process, so every step trains on all rows, whatever order
    the Trainer's sampler deals them in."""
    return _Rows(testing.causal_lm_batch(testing.tiny_llama(), WORLD * PER_DEVICE, 12, seed=0))


def _model():
    return testing.make_lora_model(testing.tiny_llama(num_layers=2), r=4, dropout=0.0)


def _accelerate_state() -> None:
    from accelerate import PartialState

    # What TrainingArguments does for DeepSpeed, with the backend it cannot find on a CPU.
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]


def _trainer(stage: int, out_dir: str, model, callbacks):
    import transformers
    from accelerate.state import AcceleratorState

    # One process builds several Trainers, and accelerate takes a DeepSpeed plugin only from the
    # first Accelerator of a process: forget it (as transformers' and accelerate's own tests do),
    # keeping the process state `_accelerate_state` set up.
    AcceleratorState._reset_state(reset_partial_state=False)

    deepspeed_config = {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": {"stage": stage},  # DeepSpeed's defaults otherwise
    }
    args = transformers.TrainingArguments(
        output_dir=out_dir,
        deepspeed=deepspeed_config,
        accelerator_config={"use_configured_state": True},
        per_device_train_batch_size=PER_DEVICE,
        max_steps=STEPS,
        learning_rate=LR,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        save_strategy="no",
        seed=0,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    return transformers.Trainer(
        model=model,
        args=args,
        train_dataset=_global_rows(),
        data_collator=_stack,
        callbacks=callbacks,
    )


def _worker(rank: int, out_dir: str) -> None:
    deepspeed = setup_worker(rank, WORLD)
    _accelerate_state()
    # First: once TrainingArguments configured ZeRO-3, transformers builds every later model
    # partitioned (under deepspeed.zero.Init).
    model = _model()
    spider = fastpeft.Spider(model)
    try:
        _trainer(2, out_dir, model, [fastpeft.SpiderCallback(spider)]).train()
        message = ""
    except RuntimeError as error:
        message = str(error)
    if rank == 0:
        torch.save(message, f"{out_dir}/spider.pt")
    for stage in STAGES:
        model = _model()
        callback = fastpeft.FastPeftCallback(backend="torch")
        _trainer(stage, out_dir, model, [callback]).train()
        lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
        with deepspeed.zero.GatheredParameters(list(lora.values())):
            state = {n: p.detach().clone() for n, p in lora.items()}
        result = {"state": state, "patched": len(callback.report.patched)}
        result["fused"] = fused_calls(model)
        if rank == 0:
            torch.save(result, f"{out_dir}/zero{stage}.pt")


def _train_one_process(fp64: bool) -> dict[str, torch.Tensor]:
    model = _model()
    if fp64:
        model = testing.fp64_copy(model)
    batch = _global_rows().batch
    trained = [p for p in model.parameters() if p.requires_grad]
    # As the Trainer builds it: AdamW without weight decay.
    optimizer = torch.optim.AdamW(trained, lr=LR, weight_decay=0.0)
    for _ in range(STEPS):
        model(**(testing.fp64_batch(batch) if fp64 else batch)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


@requires_deepspeed
def test_trainer_with_deepspeed_and_fastpeft_callback(tmp_path):
    spawn_gloo(_worker, WORLD, str(tmp_path), timeout=TIMEOUT)
    plain, exact = _train_one_process(fp64=False), _train_one_process(fp64=True)
    for stage in STAGES:
        got = torch.load(tmp_path / f"zero{stage}.pt", weights_only=True)
        assert got["patched"] == 14, stage
        assert got["fused"] == 14 * STEPS, f"ZeRO-{stage}: the fused path must have run"
        testing.assert_all_within_reference_budget(
            got["state"], plain, exact, what=f"Trainer, ZeRO-{stage}", norm="rms"
        )
    message = torch.load(tmp_path / "spider.pt", weights_only=True)
    assert message.startswith("Spider.step(): the parameters are managed by a DeepSpeed ZeRO")
    assert "DeepSpeedSpider(engine)" in message
