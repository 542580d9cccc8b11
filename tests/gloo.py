"""Run a function on N CPU processes joined in a gloo process group (real torch.distributed)."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, body, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        body(rank, *args)
    finally:
        dist.destroy_process_group()


def spawn_gloo(body, world: int, *args) -> None:
    """`body(rank, *args)` on `world` processes (body must be a module-level function)."""
    mp.spawn(_entry, args=(world, _free_port(), body, args), nprocs=world, join=True)
