"""One fine-tuning run of a LLaVA-shaped model prepared by `mllm.paper_setup`, on synthetic
captions: its losses, tokens/s and peak memory (used by examples/finetune_mllm.py and the e2e
benchmarks). `args` carries method, location, connector, size, device, dtype, steps, batch_size,
prompt_len, lr (None: Paper A's) and dropout_off.
"""

import multiprocessing
import resource
import statistics
import time
import warnings

import torch

import fastpeft

from .. import mllm
from .captions import caption_batch
from .llava_shapes import build_llava

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _resident_mb() -> float:
    with open("/proc/self/statm") as handle:  # Linux: pages
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def peak_memory_mb(device: torch.device, baseline_mb: float = 0.0) -> float:
    """GPU: the allocator's peak. CPU: the process's resident high-water mark above
    `baseline_mb` (the resident size before the model was built: imports are not the run's)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline_mb  # KiB


PROVIDERS = ("peft", "peft-bf16", "peft+compile", "fastpeft", "frozen")


def _prepare(args, provider: str, model):
    """(module to call, optimizer or None, trainable count, patch report text) for `provider`."""
    if provider == "frozen":  # same model, no PEFT, input grads only: the floor for PEFT training
        model.requires_grad_(False)
        model.enable_input_require_grads()
        return model, None, 0, "no PEFT"
    setup = mllm.paper_setup(
        model,
        args.method,
        connector=args.connector,
        location=args.location,
        autocast_adapter_dtype=provider != "peft-bf16",
    )
    report = str(setup.patch_report)
    if provider != "fastpeft":
        fastpeft.unpatch(setup.model)
        report = "unpatched"
    if args.lr is not None:
        setup.lr, setup.connector_lr = args.lr, args.lr / 10
    module = torch.compile(setup.model) if provider == "peft+compile" else setup.model
    return module, setup.optimizer(), setup.trainable_parameters(), report


def train(args, provider: str = "fastpeft") -> dict:
    """One fine-tuning run by `provider` (see PROVIDERS; "peft" means stock PEFT, or fastpeft's
    eager adapters for method "adapter"); returns its losses, tokens/s and peak memory, and
    `check_loss`: the eval-mode loss of the first batch before training, for checking providers
    against each other. Times are the median step after the first."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    warnings.filterwarnings("ignore")
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    baseline_mb = 0.0 if device.type == "cuda" else _resident_mb()
    model = build_llava(args.size, dtype=dtype, device=device, seed=0)
    torch.manual_seed(1)  # the adapters' initial values: the same for every provider
    module, optimizer, trainable, report = _prepare(args, provider, model)
    batches = []
    for step in range(args.steps):
        batch = caption_batch(model.config, args.batch_size, args.prompt_len, seed=step)
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        batches.append(batch)
    module.eval()
    with torch.no_grad():
        check_loss = float(module(**batches[0]).loss)
    module.train(not args.dropout_off)
    losses, seconds = [], []
    for batch in batches:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = module(**batch).loss
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))  # (synchronises)
        seconds.append(time.perf_counter() - start)
    # Step 0 pays for lazy initialisation and compilation; the median of the rest resists the
    # outliers a shared machine throws in.
    step_s = statistics.median(seconds[1:])
    tokens = batches[0]["input_ids"].numel()
    result = {
        "provider": provider,
        "losses": losses,
        "check_loss": check_loss,
        "tokens_per_step": tokens,
        "step_ms": 1e3 * step_s,
        "tokens_per_s": tokens / step_s,
        "peak_mb": peak_memory_mb(device, baseline_mb),
        "trainable": trainable,
        "report": report,
    }
    del module, optimizer, model
    return result


def run_isolated(args, provider: str) -> dict:
    """`train` in a fresh process on a CPU (so the peak resident memory is this run's alone),
    in this process on a GPU (where the allocator's peak is per run)."""
    if torch.device(args.device).type == "cuda":
        return train(args, provider)
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh process per run
        return pool.apply(train, (args, provider))
