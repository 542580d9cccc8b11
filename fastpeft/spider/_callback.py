"""SpiderCallback: runs a Spider (or MagnitudeMask) step inside the Hugging Face Trainer, and
keeps its state in the Trainer's checkpoints so a resumed run continues exactly."""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import TrainerCallback


def state_file(args) -> str:
    """The file name of this process's Spider state inside a checkpoint folder: one file, or one
    per rank when the Spider holds rank-local shards (FSDP2) in a multi-process run."""
    world = getattr(args, "world_size", 1)
    return "spider.pt" if world <= 1 else f"spider_rank{args.process_index}.pt"


class SpiderCallback(TrainerCallback):
    """Calls ``spider.step()`` right after every optimizer step of a ``transformers.Trainer``.

    The hook is ``on_optimizer_step``: in transformers 5.x the Trainer calls it after
    ``optimizer.step()`` and before ``model.zero_grad()``, once per optimizer step (not per
    micro-batch), so the gradients Spider adds to G are exactly the ones the optimizer used:
    accumulated over the ``gradient_accumulation_steps`` micro-batches and clipped. (By
    ``on_step_end`` they are already zeroed.) A step the optimizer skipped (fp16 loss scaling hit
    inf/nan) is skipped here too.

    Checkpoints: each checkpoint the Trainer saves also gets the Spider's state (θ₀, G, step
    count; ``spider.pt``, or ``spider_rank{i}.pt`` per process in multi-process runs). When a run
    resumes (training begins at a step other than 0 or where this callback left off), the state
    is loaded from ``resume_from`` if given, else from ``{output_dir}/checkpoint-{step}`` (where
    ``resume_from_checkpoint=True`` resumes from); with no state there it raises rather than
    restart SPIDER from the resumed weights as θ₀.

    Args:
        spider: a :class:`~fastpeft.spider.Spider` or :class:`~fastpeft.spider.MagnitudeMask`
            built on the model the Trainer trains.
        resume_from: the checkpoint folder to take the state from when resuming, for a
            ``resume_from_checkpoint`` outside the run's ``output_dir``.
    """

    def __init__(self, spider: Any, resume_from: str | os.PathLike | None = None) -> None:
        for method in ("step", "state_dict", "load_state_dict"):
            if not callable(getattr(spider, method, None)):
                raise TypeError(
                    f"SpiderCallback: spider must be a fastpeft Spider or MagnitudeMask, got "
                    f"{type(spider).__name__} (no {method}())"
                )
        self.spider = spider
        self.resume_from = resume_from
        self._trained_to = 0  # the Trainer's step when this callback's last run ended

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step in (0, self._trained_to):
            return  # a fresh run, or another train() call in the same process
        folder = self.resume_from or os.path.join(
            args.output_dir, f"checkpoint-{state.global_step}"
        )
        path = os.path.join(folder, state_file(args))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"SpiderCallback: the Trainer resumes at step {state.global_step} and {path} "
                "does not exist; pass "
                "SpiderCallback(spider, resume_from=<the checkpoint folder>) (SPIDER must not "
                "restart with the resumed weights as θ₀)"
            )
        self.spider.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def on_optimizer_step(self, args, state, control, **kwargs):
        optimizer = kwargs.get("optimizer")
        # accelerate's AcceleratedOptimizer reports steps its GradScaler skipped.
        if getattr(optimizer, "step_was_skipped", False):
            return
        self.spider.step()

    def on_train_end(self, args, state, control, **kwargs):
        self._trained_to = state.global_step

    def on_save(self, args, state, control, **kwargs):
        # The Trainer has just written checkpoint-{step} under output_dir (hyperparameter-search
        # runs write under a per-trial folder, which this does not follow).
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            torch.save(self.spider.state_dict(), os.path.join(folder, state_file(args)))
