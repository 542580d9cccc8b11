"""Distributed training with torch's own engines on 2 CPU processes (gloo): DDP and FSDP2
(`fully_shard` on every decoder layer and the root) of a patched PEFT LoRA model give the same
trained parameters as one unpatched process on the whole batch. Under FSDP2 the fused layers only
read their weights inside their own module's forward, while the layer's parameters are gathered."""

import pytest
import torch
import torch.distributed as dist

import fastpeft
from fastpeft import testing

from ..gloo import spawn_gloo

WORLD, BATCH, STEPS = 2, 4, 3
ENGINES = ("ddp", "fsdp2")


def _model():
    model = testing.make_lora_model(testing.tiny_llama(num_layers=2), r=4, dropout=0.0)
    return model


def _batches():
    return [testing.causal_lm_batch(testing.tiny_llama(), BATCH, 12, seed=s) for s in range(STEPS)]


def _train(model, rows: slice) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for batch in _batches():
        # Every row has the same number of labelled tokens, so the mean of the ranks' mean
        # losses (what DDP's and FSDP's gradient averaging computes) is the whole batch's mean.
        model(**{k: v[rows] for k, v in batch.items()}).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def _lora_state(model) -> dict[str, torch.Tensor]:
    state = {}
    for name, param in model.named_parameters():
        if "lora_" in name:
            full = param.full_tensor() if hasattr(param, "full_tensor") else param
            state[name.replace("module.", "")] = full.detach().clone()
    return state


def _worker(rank: int, out_dir: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    for engine in ENGINES:
        model = _model()
        report = fastpeft.patch(model, backend="torch")
        assert len(report.patched) == 14, report
        if engine == "ddp":
            wrapped = DistributedDataParallel(model)
        else:
            mesh = init_device_mesh("cpu", (WORLD,))
            for layer in testing.find_language_model(model).layers:
                fully_shard(layer, mesh=mesh)
            wrapped = fully_shard(model, mesh=mesh)
        _train(wrapped, rows)
        calls = sum(
            fastpeft.patching.base.state_of(m).fused_calls
            for m in model.modules()
            if fastpeft.is_patched(m)
        )
        state = _lora_state(model)
        if rank == 0:
            torch.save({"state": state, "fused_calls": calls}, f"{out_dir}/{engine}.pt")


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_and_fsdp2_equal_one_unpatched_process(tmp_path):
    spawn_gloo(_worker, WORLD, str(tmp_path))
    single = _model()
    _train(single, slice(0, BATCH))
    want = _lora_state(single)
    for engine in ENGINES:
        saved = torch.load(tmp_path / f"{engine}.pt", weights_only=True)
        assert saved["fused_calls"] == 14 * STEPS, f"{engine}: the fused path must have run"
        assert saved["state"].keys() == want.keys()
        for name, param in want.items():
            # fp32: only the order of the gradient reductions differs.
            torch.testing.assert_close(saved["state"][name], param, rtol=1e-5, atol=1e-6)
