"""What a `fastpeft bench` run will measure, said before it starts: the level (a CPU defaults to
the CPU-sized "quick" shapes), the shapes of every suite, and a rough time estimate.

Levels: "full" (the real shapes on a GPU: LLaVA-1.5-7B and M=8192 layers; on a CPU, layers at
a quarter of Llama-7B's dimensions and the small LLaVA for longer), "quick" (minutes on a
2-core CPU), "smoke" (seconds; what CI runs to keep the command working).
"""

import torch

from . import cases, e2e
from .cases.layer_case import LayerCase, first_of_each_kind, sizes
from .spider_step import llama_shapes

# Seconds each suite took on the 2-thread AMD EPYC VM this was developed on (fp32; GPU: rough
# guesses, not yet measured), as (low, high) for the printed estimate.
_CPU_SECONDS = {
    "smoke": {"layers": (2, 10), "e2e": (8, 30), "spider": (2, 10)},
    "quick": {"layers": (10, 40), "e2e": (90, 300), "spider": (5, 20)},
    "full": {"layers": (120, 600), "e2e": (300, 900), "spider": (20, 90)},
}
_GPU_SECONDS = {
    "smoke": {"layers": (10, 60), "e2e": (20, 60), "spider": (5, 30)},
    "quick": {"layers": (60, 600), "e2e": (180, 900), "spider": (10, 60)},
    "full": {"layers": (120, 1200), "e2e": (600, 1800), "spider": (30, 180)},
}


def resolve_level(requested: str | None, device: torch.device) -> tuple[str, str | None]:
    """(level, a note for the user when the level was chosen for them)."""
    if requested is not None:
        return requested, None
    if device.type == "cuda":
        return "full", None
    return "quick", (
        "no GPU: running the CPU-sized --quick shapes (pass --full to force the full ones, "
        "tens of minutes on a CPU)"
    )


def layer_settings(device: torch.device, level: str) -> tuple[int, int, tuple, int]:
    """(dimension divisor, M, LoRA ranks, repetitions)."""
    return sizes(device, level)


def layer_cases(device: torch.device, level: str) -> list[LayerCase]:
    """The cases of every method in the layers suite, in registry order (smoke: the first of
    each)."""
    found = [case for module in cases.modules("layers") for case in module.cases(device, level)]
    return first_of_each_kind(found, lambda case: case.kind) if level == "smoke" else found


def spider_settings(device: torch.device, level: str) -> tuple[list, list | None, int]:
    """(shapes, reference subset or None, repetitions)."""
    if device.type == "cuda":
        shapes = llama_shapes(8 if level == "full" else 2)
        reference = llama_shapes(1)
    else:
        hidden = {"full": 1024, "quick": 512, "smoke": 128}[level]
        shapes, reference = llama_shapes(2, hidden, int(hidden * 2.6875)), None
    return shapes, reference, 3 if level == "smoke" else 10


def describe(suites, level: str, device: torch.device, dtype: str, compile_: bool) -> list[str]:
    """One line per suite: what it will run."""
    lines = []
    if "layers" in suites:
        scale, M, ranks, reps = layer_settings(device, level)
        count = len(layer_cases(device, level))
        dims = "Llama-7B dims" + (f" / {scale}" if scale > 1 else "")
        lines.append(
            f"layers: {count} cases at M={M}, {dims}, LoRA r in {ranks}; fwd, bwd, full; "
            f"{reps} interleaved repetitions"
        )
    if "e2e" in suites:
        s = e2e.settings(device, dtype, level)
        providers = ", ".join(e2e.default_providers(device, dtype, compile_))
        methods = "lora" if level == "smoke" else ", ".join(e2e.METHODS)
        where = "a process each" if s.isolate else "one process, shared frozen weights"
        if not s.isolate and device.type != "cuda":
            where += ", no memory figures"
        lines.append(
            f"e2e: {s.size} LLaVA, batch {s.batch_size}, text {s.prompt_len} + image tokens; "
            f"{methods}; frozen, {providers} ({where}); {s.reps} interleaved steps after "
            f"{s.warmup}"
        )
    if "spider" in suites:
        shapes, _, reps = spider_settings(device, level)
        elements = sum(torch.Size(s).numel() for s in shapes)
        lines.append(
            f"spider: {elements / 1e6:.1f}M elements in {len(shapes)} tensors; fastpeft, "
            f"reference, adamw; {reps} interleaved repetitions"
        )
    return lines


def estimate_seconds(suites, level: str, device: torch.device) -> tuple[float, float]:
    table = (_GPU_SECONDS if device.type == "cuda" else _CPU_SECONDS)[level]
    return sum(table[s][0] for s in suites), sum(table[s][1] for s in suites)


def format_estimate(low: float, high: float, device: torch.device) -> str:
    def minutes(seconds: float) -> str:
        return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"

    where = "a guess: not yet measured on a GPU" if device.type == "cuda" else (
        "measured on a 2-thread CPU VM; scales with your cores"
    )  # fmt: skip
    return f"rough time: {minutes(low)} to {minutes(high)} ({where})"
