"""`fastpeft.patch` and DeepSpeed ZeRO-3 without DeepSpeed running (fastpeft/patching/zero3.py):
the weights a fused forward reads are registered with its module only when they are ZeRO-3
parameters, and a DeepSpeed without the API fails at patch() time; eligibility comes from the
full shapes of partitioned weights. DeepSpeed itself: tests/hardening/test_deepspeed_training.py
and test_deepspeed_trainer.py."""

import copy
import subprocess
import sys
import types

import pytest
import torch

import fastpeft
from fastpeft import testing
from fastpeft.patching import zero3

from .test_ia3_patch import make_ia3_model


def _lora():
    return testing.make_lora_model(testing.tiny_llama(num_layers=1), r=4, dropout=0.0)


def _stub_deepspeed(monkeypatch, zero) -> None:
    # Installed after the model is built: transformers' import probes reject a module without
    # a spec.
    stub = types.ModuleType("deepspeed")
    stub.zero = zero
    monkeypatch.setitem(sys.modules, "deepspeed", stub)


def _recorder(calls: list):
    return types.SimpleNamespace(register_external_parameter=lambda m, p: calls.append((m, p)))


def _partition(model) -> None:
    """What ZeRO-3 leaves outside a module's forward: every parameter an empty 1-D tensor, its
    full shape in `ds_shape`, its id in `ds_id`."""
    for i, p in enumerate(model.parameters()):
        p.ds_id, p.ds_shape = i, p.shape
        p.data = torch.empty(0, dtype=p.dtype)


def test_plain_parameters_are_not_registered_even_with_deepspeed_imported(monkeypatch):
    # A CPU Trainer run imports deepspeed without using it: nothing may change for its models.
    model = _lora()
    calls = []
    _stub_deepspeed(monkeypatch, _recorder(calls))
    assert len(fastpeft.patch(model, backend="torch").patched) == 7
    assert calls == []


def test_patching_does_not_import_deepspeed():
    # In a fresh interpreter: earlier tests in this one (TRL's, the Trainer's) import deepspeed.
    code = (
        "import sys, fastpeft; from fastpeft import testing\n"
        "model = testing.make_lora_model(testing.tiny_llama(num_layers=1), r=4, dropout=0.0)\n"
        "assert len(fastpeft.patch(model, backend='torch').patched) == 7\n"
        "assert 'deepspeed' not in sys.modules, 'patch() imported deepspeed'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_registers_every_child_parameter_of_the_patched_modules(monkeypatch):
    model = _lora()
    calls = []
    _stub_deepspeed(monkeypatch, _recorder(calls))
    fastpeft.patch(model, backend="torch")  # before deepspeed.initialize: nothing to register
    assert calls == []
    _partition(model)  # deepspeed.initialize with ZeRO-3; patching again registers
    report = fastpeft.patch(model, backend="torch")
    modules = dict(model.named_modules())
    want = [
        (modules[name], p) for name in report.patched for p in modules[name].parameters()
    ]  # base_layer.weight, lora_A and lora_B: a LoRA layer has no parameter of its own
    assert len(want) == 7 * 3
    assert [(id(m), id(p)) for m, p in calls] == [(id(m), id(p)) for m, p in want]


def test_a_deepspeed_without_the_api_fails_at_patch_time(monkeypatch):
    model = _lora()
    _stub_deepspeed(monkeypatch, types.SimpleNamespace())
    _partition(model)
    with pytest.raises(RuntimeError, match="register_external_parameter is not available"):
        fastpeft.patch(model, backend="torch")
    assert not any(fastpeft.is_patched(m) for m in model.modules())


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_partitioned_weights_are_judged_by_their_full_shapes(method, monkeypatch):
    model = _lora() if method == "lora" else make_ia3_model(testing.tiny_llama(num_layers=1))
    _stub_deepspeed(monkeypatch, _recorder([]))
    want = fastpeft.patch(copy.deepcopy(model), backend="torch")
    _partition(model)
    got = fastpeft.patch(model, backend="torch")
    assert got.patched == want.patched and not got.skipped and got.patched


def test_shape_of():
    plain = torch.zeros(3, 4)
    assert zero3.shape_of(plain) == (3, 4) and zero3.numel_of(plain) == 12
    empty = torch.empty(0)
    assert zero3.shape_of(empty) == (0,)
    empty.ds_shape = torch.Size([5, 2])
    assert zero3.shape_of(empty) == (5, 2) and zero3.numel_of(empty) == 10
