"""Time full training steps (forward, backward, AdamW) of two models on the same batches.

Steps of the models are interleaved (A, B, A, B, ...) so slow drifts of a shared CPU (thermal,
other processes) hit both equally, and medians are reported.
"""

import statistics
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn


@dataclass
class StepTimes:
    """Per-step wall-clock seconds and losses of one model."""

    seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    def quantile_s(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_optimizer(model: nn.Module, lr: float = 1e-4) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, foreach=True)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def time_interleaved(
    models: dict[str, nn.Module], batches: list[dict], steps: int, warmup: int = 2
) -> dict[str, StepTimes]:
    """Train every model on batches[i % len(batches)] for warmup + steps steps, interleaved.

    Each model gets its own AdamW; the batches are rotated so no step reuses hot caches from the
    previous one. Returns the timed steps' seconds and losses per model name.
    """
    optimizers = {name: make_optimizer(model) for name, model in models.items()}
    results = {name: StepTimes() for name in models}
    device = next(iter(models.values())).parameters().__next__().device
    for step in range(warmup + steps):
        batch = batches[step % len(batches)]
        for name, model in models.items():
            _sync(device)
            start = time.perf_counter()
            loss = train_step(model, optimizers[name], batch)
            _sync(device)
            if step >= warmup:
                results[name].seconds.append(time.perf_counter() - start)
                results[name].losses.append(loss)
    return results
