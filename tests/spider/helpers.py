"""Shared pieces of the SPIDER tests: tiny models, a training loop, synthetic gradient streams."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fastpeft import testing

# Backends that run on this machine's CPU tier (Triton through its interpreter).
CPU_BACKENDS = ["torch", "cpp", "triton"]


def partial_llava(seed: int = 0) -> nn.Module:
    """Tiny LLaVA with SPIDER's usual partial tuning: the connector and the last decoder layer of
    the language model trainable, everything else frozen."""
    model = testing.tiny_llava(seed=seed)
    last = len(model.model.language_model.layers) - 1
    for name, p in model.named_parameters():
        p.requires_grad_(
            name.startswith("model.multi_modal_projector.")
            or name.startswith(f"model.language_model.layers.{last}.")
        )
    return model


def train(
    model: nn.Module,
    batches: list[dict],
    make_spider: Callable[[nn.Module], object] | None,
    steps: int,
    lr: float = 1e-2,
) -> tuple[list[torch.Tensor], object]:
    """AdamW + spider.step() for `steps` steps; returns the trainable parameters and the spider."""
    spider = make_spider(model) if make_spider is not None else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, foreach=True)
    for step in range(steps):
        model(**batches[step % len(batches)]).loss.backward()
        opt.step()
        if spider is not None:
            spider.step()
        opt.zero_grad(set_to_none=True)
    return [p.detach().clone() for p in params], spider


def grad_stream(shapes, steps: int, seed: int = 0, scale: float = 1.0) -> list[list[torch.Tensor]]:
    """steps x tensors of fp32 random gradients (independent of the parameters, so runs in
    different dtypes follow the same gradients)."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) * scale for s in shapes] for _ in range(steps)]


def synthetic_run(params: list[nn.Parameter], spider, grads, lr: float = 0.05) -> None:
    """SGD-like updates w -= lr * g (in the parameter's dtype) followed by spider.step(); a None
    gradient leaves that parameter without .grad for the step."""
    for step_grads in grads:
        with torch.no_grad():
            for p, g in zip(params, step_grads, strict=True):
                if g is None:
                    p.grad = None
                    continue
                p.grad = g.to(p.dtype)
                p.sub_(lr * p.grad)
        spider.step()


def distributed_model() -> nn.Module:
    """The multi-process SPIDER tests' model, seeded. Odd output sizes: 2 ranks shard and
    partition its tensors unevenly (FSDP2 and ZeRO-3 pad the last rank's piece)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 21), nn.Tanh(), nn.LayerNorm(21), nn.Linear(21, 7))


def distributed_batch(step: int, rows: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Step `step`'s whole global batch (x, y) for `distributed_model`: every rank draws all of
    it and takes its rows, so one process can train on the same batch."""
    g = torch.Generator().manual_seed(10 + step)
    return torch.randn(rows, 10, generator=g), torch.randn(rows, 7, generator=g)
