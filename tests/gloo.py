"""Run a function on N CPU processes joined in a gloo process group (real torch.distributed)."""

import os
import socket
import time

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
        # No rank tears its group down while a peer may still be in a collective with it: a
        # destroyed gloo group under a live peer has aborted a worker ("terminate called
        # without an active exception", seen twice on a loaded 2-core VM).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn_gloo(body, world: int, *args, timeout: float | None = None) -> None:
    """`body(rank, *args)` on `world` processes (body must be a module-level function). With
    `timeout` (seconds), processes still running then are killed and TimeoutError is raised:
    a rank stuck in a collective its peers never join would otherwise hang the suite."""
    context = mp.start_processes(
        _entry,
        args=(world, _free_port(), body, args),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if context.join(timeout=left):  # raises if a process failed
            return
        if deadline is not None and time.monotonic() >= deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            raise TimeoutError(
                f"spawn_gloo: {getattr(body, '__name__', body)} on {world} processes did not "
                f"finish within {timeout} s"
            )
