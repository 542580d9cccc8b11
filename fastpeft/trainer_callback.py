"""FastPeftCallback: `fastpeft.patch` where Hugging Face Trainer users already look.

`callbacks=[fastpeft.FastPeftCallback()]` patches the model the Trainer trains once training
begins, i.e. after whatever wrapped it with PEFT (the user, or a trainer that takes a
`peft_config`), after gradient checkpointing was switched on and before the first step, and logs
the patch report once to the Trainer's logger.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Any

from transformers import TrainerCallback
from transformers.utils import logging

from .patch import PatchReport, patch

logger = logging.get_logger("transformers.trainer")


class FastPeftCallback(TrainerCallback):
    """Patches the Trainer's model with `fastpeft.patch` at ``on_train_begin``.

    Args:
        backend: as for `fastpeft.patch` ("auto", "triton" or "torch").
        strict: as for `fastpeft.patch`: raise, listing every reason, when a PEFT layer cannot
            take the fused path.

    `report` holds the `PatchReport` of the last model patched. The hook sees the unwrapped
    model (DDP, FSDP and torch.compile wrappers call its forward), and patching is per instance
    and idempotent, so a second `train()` of the same model (resuming, for one) patches nothing
    twice and logs nothing again; a Trainer with `model_init` (hyperparameter search) builds a
    new model per run, and each is patched and logged. Evaluation before the first `train()` runs
    unpatched, with PEFT's own (equal) numbers.

    After the first optimizer step of each model it logs what ran (`first_step_summary`): every
    call fused (INFO), or how many calls took PEFT's forward and why (WARNING, unless the only
    reason is the CPU rule's timing, INFO), so a setup the fused path cannot take, e.g. bf16
    mixed precision over an fp32 model, is not silently slow. Under ``torch_compile`` the eager
    call counters do not count and nothing is logged.

    The class itself may be passed (``callbacks=[fastpeft.FastPeftCallback]``): the Trainer
    instantiates it with the defaults.
    """

    def __init__(self, backend: str = "auto", strict: bool = False) -> None:
        from . import dispatch

        dispatch.check_backend_name(backend)
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
        self.backend = backend
        self.strict = strict
        self.report: PatchReport | None = None
        self._logged: weakref.WeakSet = weakref.WeakSet()  # models whose report was logged
        self._summarised: weakref.WeakSet = weakref.WeakSet()  # ... and their first step

    def on_train_begin(self, args, state, control, model: Any = None, **kwargs):
        if model is None:
            raise ValueError(
                "FastPeftCallback: the Trainer passed no model to on_train_begin; "
                "patch the model yourself with fastpeft.patch(model)"
            )
        self.report = patch(model, backend=self.backend, strict=self.strict)
        if model not in self._logged:
            self._logged.add(model)
            if state.is_world_process_zero:
                logger.info(str(self.report))

    def on_step_end(self, args, state, control, model: Any = None, **kwargs):
        if model is None or self.report is None or model in self._summarised:
            return
        self._summarised.add(model)
        summary = first_step_summary(self.report.usage(model))
        if summary is not None and state.is_world_process_zero:
            level, message = summary
            logger.log(level, message)


def first_step_summary(usage: dict[str, dict]) -> tuple[int, str] | None:
    """(logging level, message) for the calls `PatchReport.usage` counted; None if none were
    counted (compiled calls are not)."""
    from .patching import cpu_rule

    fused = sum(u["fused"] for u in usage.values())
    fallbacks = Counter()
    for u in usage.values():
        fallbacks.update(u["fallbacks"])
    total = fused + sum(fallbacks.values())
    if total == 0:
        return None
    if not fallbacks:
        return logging.INFO, f"fastpeft: first step: all {total} patched-layer calls fused"
    reasons = "; ".join(f"{reason} ({n})" for reason, n in fallbacks.most_common())
    level = logging.INFO if set(fallbacks) == {cpu_rule.REASON} else logging.WARNING
    message = (
        f"fastpeft: first step: {total - fused} of {total} patched-layer calls took PEFT's "
        f"forward: {reasons}"
    )
    return level, message
