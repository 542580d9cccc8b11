"""SpiderAdamW handed to a real transformers.Trainer (``optimizers=(opt, None)``, the README
recipe) with gradient accumulation, clipping and the Trainer's own LR schedule: the run equals
AdamW + Spider replayed on the gradients and learning rates the Trainer used."""

import pytest
import torch

from fastpeft import testing
from fastpeft.spider import Spider, SpiderAdamW

from .test_callback import _Texts, accumulating_args, grad_recorder, tiny_model


def test_trainer_with_spider_adamw(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = tiny_model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = SpiderAdamW(trained, lr=1e-2, weight_decay=0.0, backend="cpp")
    recorder = grad_recorder(transformers, trained)
    args = accumulating_args(transformers, tmp_path)
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
