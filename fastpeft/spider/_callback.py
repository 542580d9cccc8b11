"""SpiderCallback: runs a Spider (or MagnitudeMask) step inside the Hugging Face Trainer."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class SpiderCallback(TrainerCallback):
    """Calls ``spider.step()`` right after every optimizer step of a ``transformers.Trainer``.

    The hook is ``on_optimizer_step``: in transformers 5.x the Trainer calls it after
    ``optimizer.step()`` and before ``model.zero_grad()``, once per optimizer step (not per
    micro-batch), so the gradients Spider adds to G are exactly the ones the optimizer used:
    accumulated over the ``gradient_accumulation_steps`` micro-batches and clipped. (By
    ``on_step_end`` they are already zeroed.) A step the optimizer skipped (fp16 loss scaling hit
    inf/nan) is skipped here too.

    Args:
        spider: a :class:`~fastpeft.spider.Spider` or :class:`~fastpeft.spider.MagnitudeMask`
            built on the model the Trainer trains.
    """

    def __init__(self, spider: Any) -> None:
        self.spider = spider

    def on_optimizer_step(self, args, state, control, **kwargs):
        optimizer = kwargs.get("optimizer")
        # accelerate's AcceleratedOptimizer reports steps its GradScaler skipped.
        if getattr(optimizer, "step_was_skipped", False):
            return
        self.spider.step()
