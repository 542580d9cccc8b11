"""SpiderAdamW handed to a real transformers.Trainer (``optimizers=(opt, None)``, the README
recipe) with gradient accumulation, clipping and the Trainer's own LR schedule: the run equals
AdamW + Spider replayed on the gradients and learning rates the Trainer used."""

import pytest
import torch

from fastpeft import testing
from fastpeft.spider import Spider, SpiderAdamW

from .test_callback import _Texts


def tiny_model():
    model = testing.tiny_llama(hidden_size=32, num_layers=1, vocab_size=64)
    for name, p in model.named_parameters():
        p.requires_grad_(".layers.0.mlp." in name)
    return model


def test_trainer_with_spider_adamw(tmp_path):
    transformers = pytest.importorskip("transformers")

    class Recorder(transformers.TrainerCallback):
        """The gradients (after clipping) and the lr of each optimizer step."""

        def __init__(self, params) -> None:
            self.params, self.grads, self.lrs = params, [], []

        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            self.grads.append([p.grad.detach().clone() for p in self.params])
            self.lrs.append(optimizer.param_groups[0]["lr"])

    model = tiny_model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = SpiderAdamW(trained, lr=1e-2, weight_decay=0.0, backend="cpp")
    recorder = Recorder(trained)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=3,
        learning_rate=1e-2,
        max_grad_norm=0.5,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=_Texts(model, 12),
        callbacks=[recorder],
        optimizers=(opt, None),
    )
    trainer.train()
    assert opt.spider.steps == 3 == len(recorder.grads)
    assert len(set(recorder.lrs)) > 1  # the Trainer's schedule drove the lr

    replay = [torch.nn.Parameter(start[n].clone()) for n, p in model.named_parameters()
              if p.requires_grad]  # fmt: skip
    adamw = torch.optim.AdamW(replay, lr=1e-2, weight_decay=0.0)
    spider = Spider(replay, backend="cpp")
    for grads, lr in zip(recorder.grads, recorder.lrs, strict=True):
        for p, g in zip(replay, grads, strict=True):
            p.grad = g
        adamw.param_groups[0]["lr"] = lr
        adamw.step()
        spider.step()
    for i, (a, b) in enumerate(zip(trained, replay, strict=True)):
        # fp32 elementwise chains that differ only in rounding order: 1e-5 (SPEC §7).
        testing.assert_close_fp32(a, b, rtol=1e-5, name=opt.spider.names[i])
    pinned = zip(trained, opt.spider.theta0, strict=True)
    assert any(bool((p.detach() == t0).any()) for p, t0 in pinned)
