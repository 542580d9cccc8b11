"""``TrainingArguments(torch_compile=True)`` with ``fastpeft.FastPeftCallback``: the Trainer
compiles the model (inductor, its default backend) and the callback patches it before the first
step, so the compiled graphs hold fastpeft's ops. Kept out of test_trainer.py, whose numerics CI
reruns under other CPU kernels: one inductor compile of tiny LLaVA takes about half a minute."""

import copy

import pytest
import torch

import fastpeft
from fastpeft import FastPeftCallback, testing
from fastpeft.ops import _counters
from fastpeft.testing import assert_all_within_reference_budget, assert_within_reference_budget

from .test_trainer import _args, _lora_llava, _lora_params, _losses, _trainer

pytest.importorskip("accelerate")


def test_fastpeft_callback_under_torch_compile(tmp_path, fresh_dynamo):
    # The baseline is unpatched PEFT compiled the same way: inductor reorders the model's own
    # reductions, so a compiled run's distance from fp64 is inductor's as much as the op's (under
    # ATEN_CPU_CAPABILITY=avx2 stock PEFT compiled lands 33x further from fp64 than eager).
    stock = _lora_llava()
    compiled = copy.deepcopy(stock)  # identical initial weights
    exact = testing.fp64_copy(stock)  # the reference the error budgets are measured against
    runs = {}
    for name, model, torch_compile in (("stock", stock, True), ("exact", exact, False)):
        trainer = _trainer(model, _args(tmp_path / name, max_steps=3, torch_compile=torch_compile))
        _counters.reset()
        trainer.train()
        assert not _counters.launches  # no fastpeft op anywhere in these runs
        runs[name] = (torch.tensor(_losses(trainer), dtype=torch.float64), _lora_params(model))
    torch._dynamo.reset()  # the patched model's graphs are its own

    args = _args(tmp_path / "compiled", max_steps=3, torch_compile=True)
    # The class, not an instance: the Trainer instantiates callbacks passed as classes.
    trainer = _trainer(compiled, args, callbacks=[fastpeft.FastPeftCallback])
    _counters.reset()
    trainer.train()
    runs["compiled"] = (torch.tensor(_losses(trainer), dtype=torch.float64), _lora_params(compiled))

    assert isinstance(trainer.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
    # Every patched layer's forward and backward ran the fused op inside the compiled graphs in
    # each of the three steps (the op counts itself when it runs, compiled or not).
    (switch,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, FastPeftCallback)]
    layers = len(switch.report.patched)
    assert _counters.launches["lora_fwd:torch"] == 3 * layers > 0
    assert _counters.launches["lora_bwd:torch"] == 3 * layers

    (stock_losses, stock_params), (got_losses, got_params) = runs["stock"], runs["compiled"]
    exact_losses, exact_params = runs["exact"]
    assert len(got_losses) == len(stock_losses) == 3
    assert_within_reference_budget(
        got_losses.float(), stock_losses.float(), exact_losses, name="loss"
    )
    assert_all_within_reference_budget(
        got_params, stock_params, exact_params, what="param", norm="rms"
    )
