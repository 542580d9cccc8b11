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


def _status_mib(field: str) -> float | None:
    """A size field of /proc/self/status (Linux) in MiB, or None where there is none."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:  # Linux: pages
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def peak_memory_mib(device: torch.device, baseline_mib: float = 0.0) -> float:
    """Peak memory in MiB (2**20 bytes). GPU: the allocator's peak. CPU: the process's resident
    high-water mark above `baseline_mib` (the resident size before the model was built: imports
    are not the run's). The high-water mark is VmHWM, not getrusage's ru_maxrss: a spawned
    process inherits its parent's ru_maxrss across fork and exec, so a large parent would hide
    every child's own peak behind its own."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    high_water = _status_mib("VmHWM")
    if high_water is None:
        high_water = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return high_water - baseline_mib


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


def caption_batches(model, args, count: int) -> list[dict]:
    """`count` synthetic caption batches for `model` on args.device, pixels in args.dtype."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    batches = []
    for step in range(count):
        batch = caption_batch(model.config, args.batch_size, args.prompt_len, seed=step)
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        batches.append(batch)
    return batches


class Run:
    """One provider's prepared model and optimizer on a fixed list of batches: `step(i)` trains
    on batch i (modulo their number) and returns its wall-clock seconds.

    `check_loss` is the eval-mode loss of the first batch before training, for checking
    providers against each other (dropout off, so it is exact up to rounding)."""

    def __init__(self, args, provider: str, model, batches: list[dict]):
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
        self.provider = provider
        self.device = torch.device(args.device)
        torch.manual_seed(1)  # the adapters' initial values: the same for every provider
        self.module, self.optimizer, self.trainable, self.report = _prepare(args, provider, model)
        self.batches = batches
        self.tokens_per_step = batches[0]["input_ids"].numel()
        self.module.eval()
        with torch.no_grad():
            self.check_loss = float(self.module(**batches[0]).loss)
        self.module.train(not args.dropout_off)
        self.losses: list[float] = []

    def step(self, i: int) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        loss = self.module(**self.batches[i % len(self.batches)]).loss
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(loss.item())  # (synchronises)
        return time.perf_counter() - start


def train(args, provider: str = "fastpeft") -> dict:
    """One fine-tuning run by `provider` (see PROVIDERS; "peft" means stock PEFT, or fastpeft's
    eager adapters for method "adapter"); returns its losses, tokens/s and peak memory (MiB), and
    `check_loss` (see `Run`). Times are the median step after the first."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    warnings.filterwarnings("ignore")
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    baseline_mib = 0.0 if device.type == "cuda" else resident_mib()
    model = build_llava(args.size, dtype=dtype, device=device, seed=0)
    run = Run(args, provider, model, caption_batches(model, args, args.steps))
    seconds = [run.step(i) for i in range(args.steps)]
    # Step 0 pays for lazy initialisation and compilation; the median of the rest resists the
    # outliers a shared machine throws in.
    step_s = statistics.median(seconds[1:])
    peak = peak_memory_mib(device, baseline_mib)
    result = {
        "provider": provider,
        "losses": run.losses,
        "check_loss": run.check_loss,
        "tokens_per_step": run.tokens_per_step,
        "step_ms": 1e3 * step_s,
        "tokens_per_s": run.tokens_per_step / step_s,
        "peak_mib": peak,
        "peak_mb": peak,  # the same MiB figure under its old name (examples/finetune_mllm.py)
        "trainable": run.trainable,
        "report": run.report,
    }
    del run, model
    return result


def run_isolated(args, provider: str) -> dict:
    """`train` in a fresh process on a CPU (so the peak resident memory is this run's alone),
    in this process on a GPU (where the allocator's peak is per run)."""
    if torch.device(args.device).type == "cuda":
        return train(args, provider)
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh process per run
        return pool.apply(train, (args, provider))
