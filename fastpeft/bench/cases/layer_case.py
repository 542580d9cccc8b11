"""What a case of the layers and proof suites is: one method's layer at one shape (`LayerCase`),
the proof suite's variant of it (`ProofCase`), how its providers are set up (`Setup`), what it
costs (`Cost`), and how big the cases are at each level (`sizes`)."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import of

HIDDEN, INTERMEDIATE = 4096, 11008  # Llama-7B's d and MLP width: the shapes every case scales
FULL_RANKS = (16, 64, 128)
SHORT_DTYPES = {"float32": "fp32", "bfloat16": "bf16"}

# Proof cases run most important first, and the budget may cut the list anywhere: the headline
# target, then each method's main cases, then the rest (registry order within a priority).
HEADLINE, MAIN, REST = 0, 1, 2


@dataclass
class LayerCase:
    kind: str  # the registry method: "lora", "ia3", "adapter", "adapter_pair"
    label: str
    M: int
    K: int
    N: int
    r: int = 0  # LoRA rank or adapter bottleneck (the case module's SIZE_NAME names it)
    feedforward: bool = False  # IA3 input scaling (down_proj)

    def name(self) -> str:
        size_name = of(self.kind).SIZE_NAME
        extra = f" {size_name}={self.r}" if size_name else ""
        extra += " (input scale)" if self.feedforward else ""
        return f"{self.kind} {self.label} M={self.M} {self.K}->{self.N}{extra}"


@dataclass(frozen=True)
class ProofCase:
    layer: LayerCase
    weights: str = "float32"  # dtype of the trained weights (LoRA A/B, adapter); IA3: fp32
    dropout: float = 0.0

    def name(self) -> str:
        varies = of(self.layer.kind).PROOF_VARIES  # only what varies is worth naming
        text = self.layer.name()
        text += f" {SHORT_DTYPES[self.weights]} weights" if "weights" in varies else ""
        return text + (f", dropout {self.dropout:g}" if "dropout" in varies else "")


@dataclass(frozen=True)
class Setup:
    """How a case's providers are built: the trained weights' dtype, the dropout of a method
    whose proof cases vary it (the others keep their own), and whether to add the torch.compile
    providers."""

    weights: str = "float32"
    dropout: float = 0.05  # Paper A's
    compile_: bool = False


class Cost(NamedTuple):
    """Analytic FLOPs and minimum bytes moved of one forward and one backward."""

    fwd_flops: float
    bwd_flops: float
    fwd_bytes: float
    bwd_bytes: float


class Sizes(NamedTuple):
    scale: int  # every dimension divided by it (1 on a GPU)
    M: int
    ranks: tuple[int, ...]  # the rank sweep, for the methods that have a rank
    reps: int  # interleaved repetitions


def sizes(device: torch.device, level: str) -> Sizes:
    """The layers suite's sizes at `level` on `device`."""
    if device.type == "cuda":
        return Sizes(1, 8192, FULL_RANKS, 30) if level == "full" else Sizes(1, 4096, (16, 128), 20)
    return {
        "full": Sizes(4, 1024, FULL_RANKS, 20),
        "quick": Sizes(8, 512, (16, 128), 12),
        "smoke": Sizes(32, 64, (16,), 3),
    }[level]


def first_of_each_kind(cases: Iterable, kind_of: Callable[[object], str]) -> list:
    """The first case of every kind, in the order the kinds first appear: the smoke levels run
    one case per method, the code path in seconds."""
    first: dict = {}
    for case in cases:
        first.setdefault(kind_of(case), case)
    return list(first.values())
