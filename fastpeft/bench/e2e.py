"""The e2e suite: training steps (forward, backward, optimizer) of a LLaVA-1.5-shaped model per
method and provider, against the frozen model's step (same model, no PEFT, input grads only),
the floor that bounds every PEFT method from below.

Methods use Paper A's settings (`mllm.paper_setup`). Providers: "peft" (stock PEFT; for
"adapter", fastpeft's eager adapters, labelled "eager": PEFT has no bottleneck adapters),
"peft-bf16" (trained weights in the base dtype; 16-bit only), "peft+compile", "fastpeft", and
"frozen". Each provider's first-batch loss (dropout off) is checked against the baseline's before
it is timed. The providers of one method, the frozen step included, are timed interleaved: each
repetition runs one step of every provider in turn (`e2e_runners` says where they live), so the
per-repetition ratios against the baseline cancel the drifts of a shared machine.
"""

from argparse import Namespace

import torch

from .e2e_runners import InProcessRun, ProcessRun, SharedModel
from .stats import spread
from .timing import rotation

METHODS = ("lora", "ia3", "adapter", "prefix")
FLOOR = "frozen"


def settings(device: torch.device, dtype: str, level: str) -> Namespace:
    """Run settings for `level` ("full", "quick", "smoke"): the 7B shape at sequence 2048 on a GPU
    (image 576 + text); on a CPU the "small" LLaVA (hidden 512), "tiny" for smoke runs. `reps`
    timed repetitions follow `warmup` untimed ones (lazy initialisation, compilation)."""
    gpu = device.type == "cuda"
    if gpu and level != "smoke":
        size, batch, prompt = "7b", 1, 2048 - 576 - 4
        reps = 15 if level == "full" else 8
    else:
        size, batch, prompt = ("tiny", 2, 32) if level == "smoke" else ("small", 2, 60)
        reps = {"full": 30, "quick": 15, "smoke": 3}[level]
    warmup = 1 if level == "smoke" else 2
    return Namespace(
        isolate=not gpu and level != "smoke",  # a process per provider: see e2e_runners
        size=size,
        device=str(device),
        dtype=dtype,
        steps=min(8, warmup + reps),  # distinct batches, rotated
        reps=reps,
        warmup=warmup,
        batch_size=batch,
        prompt_len=prompt,
        location="both",
        connector=True,
        lr=None,
        dropout_off=False,
        method="lora",
    )


def default_providers(device: torch.device, dtype: str, compile_: bool) -> list[str]:
    providers = ["peft"]
    if dtype != "float32":
        providers.append("peft-bf16")
    if compile_:
        providers.append("peft+compile")
    return providers + ["fastpeft"]


def label(method: str, provider: str) -> str:
    """The name a provider's row carries: "peft*" is fastpeft's eager module for adapters."""
    if method == "adapter" and provider.startswith("peft"):
        return "eager" + provider.removeprefix("peft")
    return provider


class _Starter:
    """Starts providers where `e2e_runners` puts them on this device."""

    def __init__(self, args: Namespace):
        self._args = args
        self._shared = None if args.isolate else SharedModel(args, args.steps)

    def __call__(self, method: str, provider: str):
        args = Namespace(**{**vars(self._args), "method": method})
        if provider.endswith("+compile"):
            torch._dynamo.reset()  # one compile per method, not recompiles up to dynamo's limit
        if self._shared is not None:
            return InProcessRun(self._shared, args, provider)
        return ProcessRun(args, provider, args.steps)


def interleave(runs: dict, reps: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds of every run's step in each of `reps` repetitions (one step of each run per
    repetition, order rotated), after `warmup` untimed repetitions."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(warmup + reps):
        for name in rotation(list(runs), rep):
            seconds = runs[name].step(rep)
            if rep >= warmup:
                samples[name].append(1e3 * seconds)
    return samples


def run(args: Namespace, methods, providers, progress=None, checkpoint=None) -> list[dict]:
    """Rows for every method: its frozen step (the floor) and every provider; `checkpoint` gets
    the rows so far after each method."""
    start = _Starter(args)
    frozen = start("lora", FLOOR)  # one frozen model for every method (what it is does not vary)
    rows: list[dict] = []
    try:
        for method in methods:
            rows += _method_rows(args, method, providers, start, frozen)
            if progress:
                progress.update(1)
            if checkpoint:
                checkpoint(rows)
        peak = frozen.finish()["peak_mib"]
    finally:
        frozen.close()
    for row in rows:
        if row["provider"] == FLOOR and peak is not None:
            row["peak_mib"] = peak
    return rows


def _method_rows(args, method, providers, start, frozen) -> list[dict]:
    runs = {name: start(method, name) for name in providers}  # they build in parallel
    try:
        infos, errors = {FLOOR: frozen.ready()}, {}
        for name, worker in runs.items():
            try:
                infos[name] = worker.ready()
            except RuntimeError as exc:
                errors[name] = str(exc)
        errors.update(_loss_mismatches(args, infos))
        timed = {FLOOR: frozen, **{n: w for n, w in runs.items() if n not in errors}}
        samples = interleave(timed, args.reps, args.warmup)
        finished = {n: w.finish() for n, w in runs.items() if n not in errors}
    finally:
        for worker in runs.values():
            worker.close()
    return [
        _row(args, method, name, infos.get(name), samples.get(name), finished.get(name),
             errors.get(name))
        for name in (FLOOR, *providers)
    ]  # fmt: skip


def _loss_mismatches(args, infos: dict) -> dict[str, str]:
    """Providers whose first-batch loss (dropout off) differs from peft's: they post no time."""
    reference = infos.get("peft")
    if reference is None:
        return {}
    errors = {}
    for name, info in infos.items():
        if name in (FLOOR, "peft"):
            continue
        ref, got = reference["check_loss"], info["check_loss"]
        limit = (1e-4 if args.dtype == "float32" else 2e-2) * abs(ref)
        if not abs(got - ref) <= limit:
            errors[name] = f"first-batch loss {got:.6g} differs from peft's {ref:.6g}"
    return errors


def _row(args, method, provider, info, times, finished, error) -> dict:
    baseline = label(method, "peft")
    row = {"suite": "e2e", "case": f"{args.size} llava {method}", "method": method}
    row.update(provider=label(method, provider), baseline=baseline, size=args.size)
    row["dtype"] = args.dtype
    if provider == FLOOR:
        row["role"] = "floor"
    if info is not None:
        row.update(tokens=info["tokens_per_step"], trainable=info["trainable"])
        row["patch"] = info["report"]
    if error is not None or times is None:
        row["error"] = error or "not timed"
        return row
    s = spread(times)
    row.update(step_ms=s.median, step_p20_ms=s.p20, step_p80_ms=s.p80, times_ms=times)
    row["tokens_per_s"] = info["tokens_per_step"] / (s.median * 1e-3)
    if finished is not None and finished["peak_mib"] is not None:
        row["peak_mib"] = finished["peak_mib"]
    return row
