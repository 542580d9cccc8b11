"""SpiderCallback inside a real transformers.Trainer with gradient accumulation: Spider must add
exactly the gradients the optimizer used (accumulated over micro-batches, clipped), once per
optimizer step."""

import pytest
import torch

from fastpeft import testing
from fastpeft.spider import Spider, SpiderCallback


class _Texts(torch.utils.data.Dataset):
    def __init__(self, model, n: int) -> None:
        self.rows = []
        for i in range(n):
            b = testing.causal_lm_batch(model, batch_size=1, seq_len=8, seed=i)
            self.rows.append({k: v[0] for k, v in b.items()})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def tiny_model():
    """A 1-layer tiny Llama whose MLP alone is trained."""
    model = testing.tiny_llama(hidden_size=32, num_layers=1, vocab_size=64)
    for name, p in model.named_parameters():
        p.requires_grad_(".layers.0.mlp." in name)
    return model


def accumulating_args(transformers, tmp_path):
    """3 optimizer steps of 2 micro-batches of 2, lr 1e-2, gradients clipped at norm 0.5."""
    return transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=3,
        learning_rate=1e-2,
        max_grad_norm=0.5,  # clipping happens: G must see the clipped gradients
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def grad_recorder(transformers, params):
    """A callback that clones the gradients (after clipping) and notes the lr right before each
    optimizer step."""

    class GradRecorder(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.grads, self.lrs = [], []

        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            self.grads.append([p.grad.detach().clone() for p in params])
            self.lrs.append(optimizer.param_groups[0]["lr"])

    return GradRecorder()


def test_trainer_with_gradient_accumulation(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = tiny_model()
    spider = Spider(model, backend="cpp")
    params = spider.params
    recorder = grad_recorder(transformers, params)
    args = accumulating_args(transformers, tmp_path)
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=_Texts(model, 12),
        callbacks=[recorder, SpiderCallback(spider)],
    )
    trainer.train()
    assert spider.steps == 3 == len(recorder.grads)
    for i, G in enumerate(spider.G):
        expected = sum(step[i].float() for step in recorder.grads)
        testing.assert_close_fp32(G, expected, rtol=1e-6, name=spider.names[i])
    # The last step moved some elements back to θ₀ exactly.
    assert any(bool((p.detach() == t0).any()) for p, t0 in zip(params, spider.theta0, strict=True))
