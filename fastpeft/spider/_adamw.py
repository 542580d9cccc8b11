"""SpiderAdamW: torch.optim.AdamW with SPIDER's step (SPEC §6) fused into its update.

``AdamW.step()`` then ``Spider.step()`` makes four passes over the trainable elements: AdamW's,
then SPIDER's three (G += g with its moments; the select sums; the blend). SPIDER's c depends on
G and θ₀ only, never on w, so its two reductions can run first and AdamW's update can feed the
blend in registers. SpiderAdamW runs three passes:

1. G += g and the per-tensor moments of G (Spider's pass 1);
2. Σ c_raw and count per tensor (Spider's pass 2; reads θ₀ and G);
3. the fused pass: AdamW's update of m, v and w, then w ← θ₀ + c ⊙ (w_AdamW − θ₀).

No pass can go: R(G)'s z-scores need the moments of the whole updated G before any c_raw, and
the normalisation m = mean(nonzero c_raw) needs every c_raw before any blend. Bytes per element
(s = the parameter's element size): 8 + s, then s + 4, then 8s + 4, in all 10s + 16 (36 for
bf16) against AdamW's 7s (14) plus Spider's 5s + 16 (26): one read of g, one read and write of
w and one launch set fewer, and no rounding of w between the update and the blend.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import _params
from ._fused_adamw import FusedAdamW
from ._spider import Spider


class SpiderAdamW(FusedAdamW):
    """AdamW (decoupled weight decay, as ``torch.optim.AdamW``) whose :meth:`step` also does
    SPIDER's (SPEC §6): the result equals ``AdamW.step()`` followed by ``Spider.step()`` over the
    same parameters, up to float32 rounding (the AdamW value is not rounded to the parameter's
    dtype before the blend), in three multi-tensor passes instead of four.

    Use it in place of AdamW and drop the separate Spider (and SpiderCallback): with the Hugging
    Face Trainer, pass ``optimizers=(SpiderAdamW(model.parameters(), lr=...), None)`` or return
    it from an overridden ``create_optimizer``. For any other optimizer keep :class:`Spider`.

    Args:
        params: as for torch.optim.AdamW: tensors, (name, tensor) pairs or param-group dicts.
            Parameters with ``requires_grad`` are SPIDER-tracked (θ₀ is taken here, so build the
            optimizer on the trained weights, after ``get_peft_model``/``patch``); fp32, fp16,
            bf16 (fp64 except on Triton), contiguous; FSDP2 DTensors work on their local shards.
        lr, betas, eps, weight_decay: AdamW's; ``lr`` a float (schedulers may change it per
            step and per group), tensors are rejected.
        amsgrad, maximize: only False (rejected otherwise: not implemented in the fused pass).
        backend: SPIDER's backend, as :class:`Spider` ("auto", "torch", "triton", "cpp",
            "cuda").

    State: AdamW's per parameter (``step``, ``exp_avg``, ``exp_avg_sq``, in the parameter's
    dtype, as torch keeps them) in ``state``, and the Spider state (θ₀, G, the θ₀ moments) in
    :attr:`spider`; ``state_dict()`` is AdamW's with the Spider one under ``"spider"``, and
    ``load_state_dict`` restores both, so resuming is exact.
    """

    STATE_KEY = "spider"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        amsgrad: bool = False,
        maximize: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
        self.spider = Spider(self._named_params(), backend=backend)
        self._built = True

    def _selection(self) -> Spider:
        return self.spider

    @property
    def backends(self) -> list[str]:
        """The SPIDER backend of each (device, dtype) group, e.g. ["cpp"]."""
        return self.spider.backends

    def _fused_step(self) -> None:
        """One AdamW step fused with one SPIDER step over every parameter that has a gradient
        (the others, and their G, are left alone, as both would leave them). No host
        synchronisation on a GPU (under FSDP2: SPIDER's two small all-reduces, so every rank
        must step)."""
        # Under DeepSpeed ZeRO (zero_allow_untested_optimizer) the tracked parameters never get a
        # .grad and this would silently step nothing.
        _params.refuse_deepspeed(self.spider.params[:1], "SpiderAdamW.step()")
        self._refuse_sparse(self.spider.params)
        stepped = False
        for ready in self.spider.reduce_groups(keep_c_raw=True):
            stepped = True
            params = [self.spider.params[i] for i in ready.indices]
            exp_avg, exp_avg_sq, hyper = self._advance(params, ready.w[0].device)
            ready.plan.adamw_blend(
                ready.w, ready.grads, exp_avg, exp_avg_sq, hyper, ready.pre, ready.ft, ready.sel
            )
        if stepped:
            self.spider.steps += 1
