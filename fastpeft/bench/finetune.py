"""One fine-tuning run of a LLaVA-shaped model prepared by `mllm.paper_setup`, on synthetic
captions: its losses, tokens/s and peak memory (used by examples/finetune_mllm.py and the e2e
benchmarks). `args` carries method, location, connector, size, device, dtype, steps, batch_size,
prompt_len, lr (None: Paper A's) and dropout_off.
"""

import multiprocessing
import resource
import time
import warnings

import torch

import fastpeft

from .. import mllm
from .captions import caption_batch
from .llava_shapes import build_llava

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train(args, patched: bool) -> dict:
    """One fine-tuning run, patched or not; returns its losses, tokens/s and peak memory.

    The first step is not timed (lazy initialisation, kernel compilation)."""
    warnings.filterwarnings("ignore")
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    model = build_llava(args.size, dtype=dtype, device=device, seed=0)
    torch.manual_seed(1)  # the adapters' initial values: the same in both runs
    setup = mllm.paper_setup(model, args.method, connector=args.connector, location=args.location)
    if not patched:
        fastpeft.unpatch(setup.model)
    setup.model.train(not args.dropout_off)
    if args.lr is not None:
        setup.lr, setup.connector_lr = args.lr, args.lr / 10
    optimizer = setup.optimizer()
    batches = []
    for step in range(args.steps):
        batch = caption_batch(model.config, args.batch_size, args.prompt_len, seed=step)
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        batches.append(batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, start = [], None
    for step, batch in enumerate(batches):
        if step == 1:  # step 0 pays for lazy initialisation and kernel compilation
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        loss = setup.model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    tokens = sum(b["input_ids"].numel() for b in batches[1:])
    return {
        "losses": losses,
        "tokens_per_s": tokens / seconds,
        "peak_mb": peak_memory_mb(device),
        "trainable": setup.trainable_parameters(),
        "report": str(setup.patch_report) if patched else "unpatched",
    }


def run_isolated(args, patched: bool) -> dict:
    """`train` in a fresh process on a CPU (so the peak resident memory is this run's alone),
    in this process on a GPU (where the allocator's peak is per run)."""
    if torch.device(args.device).type == "cuda":
        return train(args, patched)
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh process per run
        return pool.apply(train, (args, patched))
