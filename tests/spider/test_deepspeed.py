"""DeepSpeedSpider under DeepSpeed (ZeRO 0 to 3) on 2 CPU processes (gloo): SPIDER's step on
the full gradients and fp32 masters gives, after a few steps, the parameters of a single-process
AdamW + Spider run on the whole batch. ZeRO-3 runs with gradient accumulation and clipping (the
factor engine.step() clipped by scales what G adds). Spider, MagnitudeMask, SpiderAdamW and
MagnitudeMaskAdamW on DeepSpeed-managed parameters refuse with a message naming
DeepSpeedSpider."""

import pytest
import torch
from torch import nn

from fastpeft.spider import DeepSpeedSpider, MagnitudeMask, MagnitudeMaskAdamW, Spider, SpiderAdamW

from ..deepspeed_gloo import TIMEOUT, config, requires_deepspeed, setup_worker
from ..gloo import spawn_gloo
from .helpers import distributed_batch as batch
from .helpers import distributed_model as model

pytestmark = [pytest.mark.slow, requires_deepspeed]

STEPS, WORLD, BATCH = 3, 2, 8
# (ZeRO stage, gradient accumulation steps, gradient clipping): the clipping norm is well below
# the gradients' (about 2.2), so every step clips. Stage 0 (no ZeRO, fp32) keeps no master: the
# weights are the masters there.
RUNS = ((0, 1, 0.0), (1, 1, 0.0), (2, 1, 0.0), (3, 2, 0.05))


def _micro_batches(step: int, rows: range, accumulation: int):
    x, y = batch(step)
    per = len(rows) // accumulation
    for k in range(accumulation):
        part = slice(rows.start + k * per, rows.start + (k + 1) * per)
        yield x[part], y[part]


def train_one_process(accumulation: int, clip: float) -> dict[str, torch.Tensor]:
    m = model()
    optimizer = torch.optim.AdamW(m.parameters(), lr=2e-2)
    spider = Spider(m, backend="cpp")
    for step in range(STEPS):
        for x, y in _micro_batches(step, range(BATCH), accumulation):
            (nn.functional.mse_loss(m(x), y) / accumulation).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(m.parameters(), clip)
        optimizer.step()
        spider.step()
        optimizer.zero_grad()
    return {n: p.detach() for n, p in m.named_parameters()}


def _refusals(deepspeed, stage: int, engine) -> list[str]:
    """What Spider, MagnitudeMask, SpiderAdamW and MagnitudeMaskAdamW say on DeepSpeed-managed
    parameters: built on them, and (SpiderAdamW) built before and stepped by the engine; and
    DeepSpeedSpider given the module instead of the engine."""

    def message(run) -> str:
        try:
            run()
        except (RuntimeError, TypeError) as error:
            return str(error)
        return ""

    def step_spider_adamw() -> None:
        m = model()
        optimizer = SpiderAdamW(m.parameters(), lr=2e-2)  # ZeRO allows it only when told to
        engine, *_ = deepspeed.initialize(
            model=m,
            optimizer=optimizer,
            config=config(stage, 2, zero_allow_untested_optimizer=True),
        )
        engine.backward(engine(torch.ones(2, 10)).sum())
        engine.step()

    return [
        message(lambda: Spider(engine.module)),
        message(lambda: MagnitudeMask(engine.module)),
        message(lambda: SpiderAdamW(engine.module.parameters())),
        message(step_spider_adamw),
        message(lambda: MagnitudeMaskAdamW(engine.module.parameters())),
        message(lambda: DeepSpeedSpider(engine.module)),
    ]


def _worker(rank: int, out_dir: str) -> None:
    deepspeed = setup_worker(rank, WORLD)
    per_rank = BATCH // WORLD
    rows = range(rank * per_rank, (rank + 1) * per_rank)
    for stage, accumulation, clip in RUNS:
        m = model()
        ds_config = config(
            stage,
            per_rank // accumulation,
            gradient_accumulation_steps=accumulation,
            gradient_clipping=clip,
        )
        optimizer = torch.optim.AdamW(m.parameters(), lr=2e-2)
        engine, *_ = deepspeed.initialize(model=m, optimizer=optimizer, config=ds_config)
        spider = DeepSpeedSpider(engine, backend="cpp")
        for step in range(STEPS):
            for x, y in _micro_batches(step, rows, accumulation):
                engine.backward(nn.functional.mse_loss(engine(x), y))
                spider.step()
        masters = {n: deepspeed.utils.safe_get_full_fp32_param(p) for n, p in m.named_parameters()}
        with deepspeed.zero.GatheredParameters(list(m.parameters())):
            weights = {n: p.detach().clone() for n, p in m.named_parameters()}
        result = {"masters": masters, "weights": weights, "steps": spider.steps}
        # Without ZeRO (stage 0, fp32) the parameters are plain: nothing to refuse.
        result["refusals"] = _refusals(deepspeed, stage, engine) if stage else None
        if rank == 0:
            torch.save(result, f"{out_dir}/zero{stage}.pt")


@requires_deepspeed
def test_deepspeed_spider_equals_single_process(tmp_path):
    spawn_gloo(_worker, WORLD, str(tmp_path), timeout=TIMEOUT)
    for stage, accumulation, clip in RUNS:
        want = train_one_process(accumulation, clip)
        got = torch.load(tmp_path / f"zero{stage}.pt", weights_only=True)
        assert got["steps"] == STEPS, stage
        for kind in ("masters", "weights") if stage else ("weights",):
            for name, param in want.items():
                # fp32: only the order of the gradient and moment reductions differs.
                torch.testing.assert_close(
                    got[kind][name], param, rtol=1e-5, atol=1e-6,
                    msg=lambda m, k=kind, n=name, s=stage: f"ZeRO-{s} {k} {n}: {m}",
                )  # fmt: skip
        if not stage:
            continue
        *refused, not_engine = got["refusals"]
        owners = ("Spider", "MagnitudeMask", "SpiderAdamW", "SpiderAdamW.step()",
                  "MagnitudeMaskAdamW")  # fmt: skip
        for owner, message in zip(owners, refused, strict=True):
            assert message.startswith(f"{owner}: the parameters are managed by a DeepSpeed ZeRO")
            assert "DeepSpeedSpider(engine)" in message, message
        assert not_engine.startswith("DeepSpeedSpider: engine must be the DeepSpeedEngine")
