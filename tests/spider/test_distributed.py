"""Spider, SpiderAdamW, MagnitudeMask and MagnitudeMaskAdamW under FSDP2 (fully_shard, DTensor
parameters and moments) on 2 CPU processes (gloo): the per-tensor sums are all-reduced over the
shards (and each rank pins its shard of the full tensor's mask), so the parameters after a few
AdamW + spider steps (or fused optimizer steps) equal a single-process run on the whole batch."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

from fastpeft.spider import MagnitudeMask, MagnitudeMaskAdamW, Spider, SpiderAdamW

from ..gloo import spawn_gloo
from .helpers import distributed_batch as batch
from .helpers import distributed_model as model

STEPS = 3
WORLD = 2
BATCH = 8
# (backend or "mask"): the Spider backends the workers run, plus MagnitudeMask, plus SpiderAdamW
# ("adamw-<backend>") and MagnitudeMaskAdamW ("maskadamw-<backend>").
KINDS = ["cpp", "torch", "mask", "adamw-cpp", "adamw-torch", "maskadamw-cpp", "maskadamw-torch"]


def make(kind: str, m: nn.Module):
    return MagnitudeMask(m) if kind == "mask" else Spider(m, backend=kind)


def train(kind: str, m: nn.Module, rows: slice) -> None:
    if kind.startswith("adamw-"):
        backend = kind.removeprefix("adamw-")
        opt = SpiderAdamW(m.parameters(), lr=2e-2, weight_decay=0.1, backend=backend)
        spider = None  # inside the optimizer's step
    elif kind.startswith("maskadamw-"):
        backend = kind.removeprefix("maskadamw-")
        opt = MagnitudeMaskAdamW(m.parameters(), lr=2e-2, weight_decay=0.1, backend=backend)
        spider = None
    else:
        opt = torch.optim.AdamW(m.parameters(), lr=2e-2)
        spider = make(kind, m)
    for step in range(STEPS):
        x, y = batch(step)
        nn.functional.mse_loss(m(x[rows]), y[rows]).backward()
        opt.step()
        if spider is not None:
            spider.step()
        opt.zero_grad()


def _worker(rank: int, out_dir: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (WORLD,))
    for kind in KINDS:
        m = model()
        for layer in m:
            if any(True for _ in layer.parameters()):
                fully_shard(layer, mesh=mesh)
        fully_shard(m, mesh=mesh)
        per_rank = BATCH // WORLD
        train(kind, m, slice(rank * per_rank, (rank + 1) * per_rank))
        full = {n: p.full_tensor().detach() for n, p in m.named_parameters()}
        if rank == 0:
            torch.save(full, f"{out_dir}/{kind}.pt")


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_fsdp2_equals_single_process(tmp_path):
    spawn_gloo(_worker, WORLD, str(tmp_path))
    for kind in KINDS:
        single = model()
        train(kind, single, slice(0, BATCH))
        sharded = torch.load(tmp_path / f"{kind}.pt", weights_only=True)
        for name, p in single.named_parameters():
            # fp32: only the order of the gradient and moment reductions differs.
            torch.testing.assert_close(sharded[name], p.detach(), rtol=1e-5, atol=1e-6)
