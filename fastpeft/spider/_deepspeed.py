"""DeepSpeedSpider: SPIDER (SPEC §6) for a model trained by a DeepSpeed engine."""

from __future__ import annotations

import importlib
from typing import Any

import torch

from ..patching import zero3
from ..versions import DEEPSPEED_TESTED
from . import _params
from ._spider import Spider

# deepspeed.utils' accessors of ZeRO's partitioned state (documented in DeepSpeed's zero3.rst,
# "Debugging" and "Modifying Partitioned States"): what this module needs from DeepSpeed.
_UTILS = (
    "safe_get_full_grad",
    "safe_get_full_fp32_param",
    "safe_set_full_fp32_param",
    "safe_set_local_fp32_param",
)
# DeepSpeed ZeRO 1-3 clip by max_norm / (norm + 1e-6) where that is below 1 (unscale_and_clip_grads
# in stage_1_and_2.py and stage3.py, 0.19.8), as torch.nn.utils.clip_grad_norm_ does.
_CLIP_EPS = 1e-6


def _deepspeed_api(owner: str) -> tuple[Any, dict[str, Any]]:
    try:
        deepspeed = importlib.import_module("deepspeed")
        utils = {name: getattr(deepspeed.utils, name) for name in _UTILS}
        utils["GatheredParameters"] = deepspeed.zero.GatheredParameters
    except (ImportError, AttributeError) as error:
        raise RuntimeError(
            f"{owner} needs deepspeed.utils.{', '.join(_UTILS)} and "
            f"deepspeed.zero.GatheredParameters ({error}); it was tested with DeepSpeed "
            f"{DEEPSPEED_TESTED}"
        ) from error
    return deepspeed, utils


class DeepSpeedSpider:
    """SPIDER for a model trained with DeepSpeed: call :meth:`step` in place of
    ``engine.step()``, after ``engine.backward(loss)``, every micro-batch.

    Under ZeRO a parameter no longer holds what :class:`Spider` reads and writes: after
    ``engine.backward`` its gradient lives partitioned in the optimizer's buffers (``p.grad`` is
    None), ``engine.step()`` updates an fp32 master copy, then zeroes the gradients, and a value
    written into the parameter is overwritten from the master at the next step (under ZeRO-3 the
    parameter itself is an empty partition). So at each optimizer step :meth:`step`:

    1. reads the full averaged gradient of every tracked parameter with
       ``deepspeed.utils.safe_get_full_grad`` (as the SPIDER paper's code does), before
       ``engine.step()`` frees it;
    2. calls ``engine.step()``;
    3. reads the full fp32 master weights (``safe_get_full_fp32_param``), runs :class:`Spider`'s
       step on them with those gradients (times the clipping factor ``engine.step()`` applied:
       DeepSpeed's ``gradient_clipping`` defaults to 1.0), and writes them back to the master
       (``safe_set_full_fp32_param``; under ZeRO-3 each rank's partition through
       ``safe_set_local_fp32_param``) and to the model's weights (under ZeRO-3 through
       ``deepspeed.zero.GatheredParameters``, which partitions them again).

    On the other micro-batches of a gradient accumulation it only calls ``engine.step()``. Every
    rank computes the same full-tensor step, so the result equals a single-process Spider on the
    whole batch. Costs: θ₀, G and a working copy of each tracked tensor, in fp32 and in full on
    every rank (12 bytes per trainable element, not partitioned: small for adapters, large for
    full fine-tuning), and per step and tracked tensor one all-reduce or all-gather for the
    gradient and one for the master (ZeRO-3: one more gather and a broadcast).

    Args:
        engine: the ``DeepSpeedEngine`` from ``deepspeed.initialize``, built with an optimizer;
            the parameters of ``engine.module`` with ``requires_grad`` are tracked, θ₀ being
            their fp32 master values now. fp32 or bf16 training (fp16's loss scaling is
            refused: the gradients read before ``engine.step()`` are still scaled).
        backend: SPIDER's backend for the full fp32 copies, as for :class:`Spider`.

    Tested without ZeRO and with ZeRO-1, -2 and -3 (fp32, 2 CPU processes over gloo; ZeRO-3 with
    gradient accumulation and clipping). The Hugging Face Trainer cannot use it: accelerate
    (1.15) calls ``engine.step()`` inside ``accelerator.backward``, so no callback runs between
    the gradients and the step (``SpiderCallback`` there stops at the first step, saying so).
    """

    def __init__(self, engine: Any, backend: str = "auto") -> None:
        deepspeed, self._ds = _deepspeed_api("DeepSpeedSpider")
        if not isinstance(engine, deepspeed.DeepSpeedEngine):
            raise TypeError(
                "DeepSpeedSpider: engine must be the DeepSpeedEngine that deepspeed.initialize() "
                f"returns (its first result), got {type(engine).__name__}"
            )
        if engine.optimizer is None:
            raise ValueError(
                "DeepSpeedSpider: engine has no optimizer; pass one (or an 'optimizer' config "
                "entry) to deepspeed.initialize"
            )
        if engine.fp16_enabled():
            raise ValueError(
                "DeepSpeedSpider: engine trains in fp16, whose loss scaling leaves the gradients "
                "scaled until engine.step(); use bf16 or fp32"
            )
        self.engine = engine
        named = _params.collect(engine.module, owner="DeepSpeedSpider")
        if not named:
            raise ValueError("DeepSpeedSpider: engine.module has no trainable parameters")
        self.params = [p for _, p in named]
        with torch.no_grad():
            masters = [self._read_master(p) for p in self.params]
        # Spider over full fp32 working copies: step() loads the masters into them, sets their
        # .grad to the gathered gradients and lets Spider blend them in place.
        self._work = [m.requires_grad_(True) for m in masters]
        self.spider = Spider(
            [(name, w) for (name, _), w in zip(named, self._work, strict=True)], backend=backend
        )

    @property
    def names(self) -> list[str]:
        return self.spider.names

    @property
    def steps(self) -> int:
        return self.spider.steps

    @property
    def backends(self) -> list[str]:
        return self.spider.backends

    def _read_master(self, p: torch.Tensor) -> torch.Tensor:
        """The full fp32 master value of p, a fresh tensor (the weight itself where DeepSpeed
        keeps no master: no ZeRO and fp32)."""
        master = self._ds["safe_get_full_fp32_param"](p)
        if master is None:
            master = p.detach()
        return master.detach().to(torch.float32, copy=True).contiguous()

    def _full_grad(self, p: torch.Tensor) -> torch.Tensor | None:
        grad = self._ds["safe_get_full_grad"](p)
        return None if grad is None else grad.detach().to(torch.float32, copy=True)

    def _clip_factor(self) -> float:
        """The factor engine.step() scaled the gradients by (1 without gradient clipping)."""
        max_norm = float(self.engine.gradient_clipping() or 0.0)
        if max_norm <= 0.0:
            return 1.0
        norm = self.engine.get_global_grad_norm()
        if norm is None:
            raise RuntimeError(
                f"DeepSpeedSpider.step: the config sets gradient_clipping={max_norm}, but "
                "engine.get_global_grad_norm() is None, so the clipped gradients the optimizer "
                "used are unknown; turn gradient_clipping off for SPIDER"
            )
        return min(1.0, max_norm / (float(norm) + _CLIP_EPS))

    @torch.no_grad()
    def step(self) -> None:
        """``engine.step()``, and at each optimizer step (the last micro-batch of a gradient
        accumulation) SPIDER's step on the full fp32 masters around it (see the class). A
        collective: call it on every rank."""
        if not self.engine.is_gradient_accumulation_boundary():
            self.engine.step()
            return
        grads = [self._full_grad(p) for p in self.params]
        self.engine.step()
        if not self.engine.was_step_applied() or all(g is None for g in grads):
            return  # a skipped step (overflow) changed nothing; neither does SPIDER
        factor = self._clip_factor()
        for p, work, grad in zip(self.params, self._work, grads, strict=True):
            work.copy_(self._read_master(p))
            work.grad = None if grad is None else grad.mul_(factor)
        try:
            self.spider.step()
        finally:
            for work in self._work:
                work.grad = None
        self._write_back()

    def _write_back(self) -> None:
        """The blended values into the fp32 masters and into the model's weights."""
        partitioned = []
        for p, work in zip(self.params, self._work, strict=True):
            if zero3.is_partitioned(p):  # ZeRO-3: p is an empty partition
                self._ds["safe_set_local_fp32_param"](p, self._local_slice(p, work))
                partitioned.append((p, work))
            else:
                self._ds["safe_set_full_fp32_param"](p, work)
                p.copy_(work)  # rounds to p's dtype, as DeepSpeed's own master → weight copy
        if partitioned:
            # Gathered, overwritten (every rank holds the same values; rank 0's are broadcast)
            # and partitioned again on exit.
            with self._ds["GatheredParameters"]([p for p, _ in partitioned], modifier_rank=0):
                for p, work in partitioned:
                    p.copy_(work)

    @staticmethod
    def _local_slice(p: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        """This rank's ZeRO-3 partition of ``full``: the rank-th run of ``p.ds_tensor.numel()``
        elements, zero-padded at the end of the tensor as ZeRO-3 pads its last partition.

        NOTE: safe_set_full_fp32_param does this slicing itself but, in DeepSpeed 0.19.8, without
        the padding: for a tensor whose size is not a multiple of the ranks it fails on the last
        rank with "RuntimeError: start (11) + length (11) exceeds dimension size (21)." (a
        21-element bias on 2 ranks). The local setter takes the padded partition."""
        size = p.ds_tensor.numel()
        start = torch.distributed.get_rank(group=p.ds_process_group) * size
        flat = full.flatten()[start : start + size]
        local = torch.zeros(size, dtype=torch.float32, device=full.device)
        local[: flat.numel()] = flat
        return local

    def stats(self) -> dict[str, dict[str, float]]:
        """:meth:`Spider.stats` of the tracked parameters (identical on every rank)."""
        return self.spider.stats()

    def state_dict(self) -> dict[str, Any]:
        """:meth:`Spider.state_dict`: θ₀ and G in full (the same on every rank)."""
        return self.spider.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore θ₀ and G saved by :meth:`state_dict`; the weights come from DeepSpeed's own
        checkpoint (``engine.load_checkpoint``)."""
        self.spider.load_state_dict(state)
