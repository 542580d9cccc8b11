"""Where the e2e suite's providers live while they are timed interleaved (one step of each in
turn), and how each one's peak memory is measured without the others in it.

CPU: every provider is a `finetune.Run` in its own process, idle between its steps. Peak memory
is that process's resident high-water mark above its size before the model was built, which no
other provider touches.

GPU: one process, one base model whose frozen weights every provider's clone shares (a LLaVA-7B
copy per provider would not fit). Peak memory is counted per provider as the shared weights and
batches, plus what the provider owns (adapters, its connector copy, optimizer state), plus the
allocator's peak above what was resident when its step started. Smoke runs on a CPU use this
path too (seconds instead of a process start per provider), without memory figures: a CPU has
no allocator peak to read.
"""

import copy
import multiprocessing
import warnings

import torch

from ..mllm import parts
from .finetune import DTYPES, Run, caption_batches, peak_memory_mib, resident_mib
from .llava_shapes import build_llava


def _info(run: Run) -> dict:
    return {
        "check_loss": run.check_loss,
        "trainable": run.trainable,
        "report": run.report,
        "tokens_per_step": run.tokens_per_step,
    }


def _serve(conn, args, provider: str, batches: int) -> None:
    """The body of a provider's process: build, report ready, then step until told to finish."""
    warnings.filterwarnings("ignore")
    try:
        device = torch.device(args.device)
        before = resident_mib()
        model = build_llava(args.size, dtype=DTYPES[args.dtype], device=device, seed=0)
        run = Run(args, provider, model, caption_batches(model, args, batches))
        conn.send(("ok", _info(run)))
        while True:
            command, value = conn.recv()
            if command == "step":
                conn.send(("ok", run.step(value)))
            else:
                peak = peak_memory_mib(device, before)
                conn.send(("ok", {"peak_mib": peak, "losses": run.losses}))
                return
    except (EOFError, BrokenPipeError):  # the bench is gone (interrupted): nobody to tell
        return
    except Exception as exc:  # reported in the provider's row, not a crash of the whole bench
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


class ProcessRun:
    """A provider in its own (spawned) process; construction returns at once, so several
    providers build in parallel, and `ready()` waits for one."""

    def __init__(self, args, provider: str, batches: int):
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, args, provider, batches), daemon=True
        )
        self._process.start()
        child.close()
        self._info = None

    def _answer(self):
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"the provider's process died (exit code {self._exit()})") from None
        if status == "error":
            raise RuntimeError(value)
        return value

    def _exit(self):
        self._process.join(timeout=5)
        return self._process.exitcode

    def ready(self) -> dict:
        """The run's check loss, trainable count and patch report (the same on later calls)."""
        if self._info is None:
            self._info = self._answer()
        return self._info

    def step(self, i: int) -> float:
        self._conn.send(("step", i))
        return self._answer()

    def finish(self) -> dict:
        """Peak memory (MiB) and losses; the process then exits."""
        self._conn.send(("finish", None))
        result = self._answer()
        self._process.join(timeout=5)
        self.close()
        return result

    def close(self) -> None:
        """End the process if it is still there (an error, an interrupt: nothing to wait for)."""
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class SharedModel:
    """One base model and its batches; `clone()` gives a copy that shares every frozen weight.

    The connector is copied, not shared: Paper A trains it, and each provider trains its own."""

    def __init__(self, args, batches: int):
        dtype, device = DTYPES[args.dtype], torch.device(args.device)
        self.model = build_llava(args.size, dtype=dtype, device=device, seed=0)
        self.model.requires_grad_(False)  # providers unfreeze what they train, in their clone
        self.batches = caption_batches(self.model, args, batches)
        own = {id(t) for t in parts.connector(self.model).parameters()}
        tensors = [*self.model.parameters(), *self.model.buffers()]
        self.shared = {id(t): t for t in tensors if id(t) not in own}
        batch_tensors = [t for batch in self.batches for t in batch.values()]
        self.shared_bytes = _nbytes(self.shared.values()) + _nbytes(batch_tensors)

    def clone(self) -> torch.nn.Module:
        return copy.deepcopy(self.model, memo=dict(self.shared))


class InProcessRun:
    """A provider's `finetune.Run` on a clone of a `SharedModel` (GPU)."""

    def __init__(self, shared: SharedModel, args, provider: str):
        self._shared = shared
        self._device = torch.device(args.device)
        self._error = None
        self._transient: list[int] = []
        try:
            self._run = Run(args, provider, shared.clone(), shared.batches)
        except Exception as exc:  # as ProcessRun: an error row, not a crash
            self._run, self._error = None, f"{type(exc).__name__}: {exc}"

    def ready(self) -> dict:
        if self._run is None:
            raise RuntimeError(self._error)
        return _info(self._run)

    def step(self, i: int) -> float:
        if self._device.type != "cuda":
            return self._run.step(i)
        resident = torch.cuda.memory_allocated(self._device)
        torch.cuda.reset_peak_memory_stats(self._device)
        seconds = self._run.step(i)
        self._transient.append(torch.cuda.max_memory_allocated(self._device) - resident)
        return seconds

    def _own_bytes(self) -> int:
        params = [p for p in self._run.module.parameters() if id(p) not in self._shared.shared]
        state = []
        if self._run.optimizer is not None:
            for values in self._run.optimizer.state.values():
                state += [v for v in values.values() if isinstance(v, torch.Tensor)]
        return _nbytes(params) + _nbytes(state)

    def finish(self) -> dict:
        """Peak memory (MiB; None on a CPU) and losses."""
        peak = None
        if self._device.type == "cuda":
            # The first step also allocates the optimizer state, counted once in _own_bytes.
            transient = max(self._transient[1:] or self._transient or [0])
            peak = (self._shared.shared_bytes + self._own_bytes() + transient) / 2**20
        result = {"peak_mib": peak, "losses": self._run.losses}
        self.close()
        return result

    def close(self) -> None:
        self._run = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
