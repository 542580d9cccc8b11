"""Patched models under DeepSpeed ZeRO-2 and ZeRO-3 on 2 CPU processes (gloo): the fused path
runs, and the trained parameters equal the unpatched model's under the same ZeRO stage (within
an error budget against one fp64 process on the whole batch).

Under ZeRO-3 every weight is an empty partition outside its own module's forward, and the fused
LoRA, IA3 and adapter forwards read their children's weights without calling the children
(fastpeft/patching/zero3.py). Covered: patching before `deepspeed.initialize` (DeepSpeed's own
discovery then registers those weights with the patched module), and after it, as
FastPeftCallback does at the Trainer's on_train_begin (`patch` registers them; the eligibility
checks read the full shapes of empty partitions), with a first call that bypasses the engine's
forward; PEFT's own forward under ZeRO-3 as a fallback.
"""

import pytest
import torch

import fastpeft
from fastpeft import testing

from ..deepspeed_gloo import TIMEOUT, config, requires_deepspeed, setup_worker
from ..gloo import spawn_gloo
from ..mllm.helpers import fused_calls, perturb_trainable
from ..patching.test_ia3_patch import make_ia3_model

pytestmark = [pytest.mark.slow, requires_deepspeed]

WORLD, BATCH, STEPS = 2, 4, 3
# (method, ZeRO stage, when fastpeft.patch runs: "before" or "after" deepspeed.initialize, or
# "unpatched", the baseline of the runs of that method and stage)
RUNS = (
    ("lora", 2, "unpatched"),
    ("lora", 2, "before"),
    ("lora", 3, "unpatched"),
    ("lora", 3, "before"),
    ("lora", 3, "after"),
    ("ia3", 3, "unpatched"),
    ("ia3", 3, "before"),
    ("adapters", 3, "unpatched"),
    ("adapters", 3, "before"),
    ("adapters", 3, "after"),
)
PAIR_HOOKS = "gate/up projections carry other hooks (only the pre-adapter's allowed)"
# (method, when) -> (the patched modules' kinds, how many run fused per forward, fallback
# reasons) in the tiny 2-layer Llama: LoRA on the 7 linears of each layer; IA3 on Paper A's k, v
# and down; adapters: each layer's gate/up pair and down_proj's post-adapter. The pair's fused
# forward runs gate_proj/up_proj past their hooks, so with ZeRO-3's hooks there it keeps its own
# forward: patched before initialize it falls back per call; patched after, it is skipped and
# its two pre-adapters are patched one by one.
EXPECTED = {
    ("lora", "before"): (["LoRA"] * 14, 14, ["adapters disabled"]),
    ("lora", "after"): (["LoRA"] * 14, 14, ["adapters disabled"]),
    ("ia3", "before"): (["IA3"] * 6, 6, ["adapters disabled"]),
    ("adapters", "before"): (["adapter"] * 2 + ["adapter pair"] * 2, 2, [PAIR_HOOKS]),
    ("adapters", "after"): (["adapter"] * 6, 6, []),
}


def _model(method: str):
    if method == "lora":
        return testing.make_lora_model(testing.tiny_llama(num_layers=2), r=4, dropout=0.0)
    if method == "ia3":
        return make_ia3_model(testing.tiny_llama(num_layers=2))
    config_ = fastpeft.AdapterConfig(bottleneck_size=8, dropout=0.0)
    base = testing.tiny_llama(num_layers=2)
    torch.manual_seed(0)  # add_adapters draws its init from the global generator
    model = fastpeft.add_adapters(base, config_, fused=False)
    perturb_trainable(model)
    return model


def _batches():
    return [testing.causal_lm_batch(testing.tiny_llama(), BATCH, 12, seed=s) for s in range(STEPS)]


def _trainable(model) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _train_fp64(model) -> dict[str, torch.Tensor]:
    """The unpatched model trained on one process in fp64: the error budget's reference."""
    model = testing.fp64_copy(model)
    optimizer = torch.optim.AdamW(_trainable(model), lr=1e-2)
    for batch in _batches():
        # Every row has the same number of labelled tokens, so the mean of the ranks' mean losses
        # (what DeepSpeed's gradient averaging computes) is the whole batch's mean.
        model(**testing.fp64_batch(batch)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def _trained_state(model, deepspeed) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    names = [n for n, p in params.items() if p.requires_grad]
    # ZeRO-3 partitions are gathered for reading (a no-op for ZeRO-2's full parameters).
    with deepspeed.zero.GatheredParameters([params[n] for n in names]):
        return {n: params[n].detach().clone() for n in names}


def _train(rank: int, deepspeed, method: str, stage: int, when: str) -> dict:
    model = _model(method)
    report = fastpeft.patch(model, backend="torch") if when == "before" else None
    optimizer = torch.optim.AdamW(_trainable(model), lr=1e-2)
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=config(stage, BATCH // WORLD)
    )
    if when == "after":
        report = fastpeft.patch(model, backend="torch")
    rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    result = {"outside": None}
    for step, batch in enumerate(_batches()):
        batch = {k: v[rows] for k, v in batch.items()}
        if step == 0 and method == "lora" and stage == 3 and when == "after":
            # The inner model before any engine forward: DeepSpeed finds reads of partitioned
            # weights by itself only inside the engine's forward, so this needs the weights
            # registered with their LoRA layer, which patch() did (the parameters were ZeRO-3's).
            with torch.no_grad():
                result["outside"] = model.base_model.model(**batch).loss.item()
        if step == 1 and method != "adapters" and report is not None:
            with model.disable_adapter(), torch.no_grad():
                engine(**batch)  # a fallback to PEFT's own forward
        engine.backward(engine(**batch).loss)
        engine.step()
    result["state"] = _trained_state(model, deepspeed)
    if report is not None:
        usage = report.usage(model)
        result["patched"] = sorted(report.kinds[n] for n in report.patched)
        result["fused"] = fused_calls(model)
        result["fallbacks"] = sorted({r for u in usage.values() for r in u["fallbacks"]})
    return result


def _worker(rank: int, out_dir: str) -> None:
    deepspeed = setup_worker(rank, WORLD)
    for run in RUNS:
        result = _train(rank, deepspeed, *run)
        if rank == 0:
            torch.save(result, f"{out_dir}/{'-'.join(map(str, run))}.pt")


@requires_deepspeed
def test_zero2_and_zero3_equal_unpatched(tmp_path):
    spawn_gloo(_worker, WORLD, str(tmp_path), timeout=TIMEOUT)
    exact = {method: _train_fp64(_model(method)) for method in {m for m, _, _ in RUNS}}
    for method, stage, when in RUNS:
        if when == "unpatched":
            continue
        got = torch.load(tmp_path / f"{method}-{stage}-{when}.pt", weights_only=True)
        plain = torch.load(tmp_path / f"{method}-{stage}-unpatched.pt", weights_only=True)
        where = f"{method}, ZeRO-{stage}, patched {when} deepspeed.initialize"
        kinds, fused, fallbacks = EXPECTED[method, when]
        assert got["patched"] == kinds, (where, got["patched"])
        calls = STEPS + (got["outside"] is not None)
        assert got["fused"] == fused * calls, f"{where}: the fused path must run"
        assert got["fallbacks"] == fallbacks, where
        if got["outside"] is not None:
            with torch.no_grad():
                first = _model(method)(**{k: v[: BATCH // WORLD] for k, v in _batches()[0].items()})
            torch.testing.assert_close(got["outside"], first.loss.item(), rtol=1e-5, atol=0)
        # Within 3x the unpatched run's error against fp64, in RMS over each tensor as in the
        # other training tests (AdamW turns last-bit gradient differences near zero into element
        # errors of any size). The baseline is DeepSpeed's own run: its reduction order alone
        # puts the adapters' ZeRO-3 run at 3.1x the RMS error of one fp32 process.
        testing.assert_all_within_reference_budget(
            got["state"], plain["state"], exact[method], what=where, norm="rms"
        )
