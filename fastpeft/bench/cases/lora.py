"""LoRA's bench cases: a PEFT LoRA linear at Llama-7B's projection shapes and the layers
suite's rank sweep, against PEFT (providers: see _peft.py); the proof suite adds the headline
r16 4096² case, varying the LoRA weights' dtype and dropout."""

import torch

from ..proof_targets import fastpeft_full_rows, judge_rows
from . import _peft
from .layer_case import HEADLINE, HIDDEN, INTERMEDIATE, REST, LayerCase, ProofCase, Setup, sizes

KIND = "lora"
SUITE = "layers"
BASELINE, FLOOR = _peft.BASELINE, _peft.FLOOR
SIZE_NAME = "r"
PROOF_VARIES = ("weights", "dropout")
HEADLINE_DROPOUT = 0.05  # Paper A's LoRA dropout
# The headline targets: at most 8% slower than the frozen linear alone, 1.35x PEFT.
VS_FROZEN, VS_PEFT = 1.08, 1.35


def cases(device: torch.device, level: str) -> list[LayerCase]:
    s = sizes(device, level)
    return [LayerCase(KIND, label, s.M, K, N, r) for label, K, N in _peft.shapes(s.scale)
            for r in s.ranks]  # fmt: skip


def providers(case: LayerCase, dtype, device, setup: Setup) -> dict:
    from peft import LoraConfig

    config = LoraConfig(
        r=case.r,
        lora_alpha=2 * case.r,
        lora_dropout=setup.dropout,
        target_modules=["proj"],
        init_lora_weights=False,
    )
    return _peft.providers(case, config, dtype, device, setup)


def cost(case: LayerCase, elem: int):
    extra = case.M * case.r * (case.K + case.N)  # x·A and (x·A)·B, and their backward
    return _peft.linear_cost(case, elem, fwd_flops=2 * extra, bwd_flops=4 * extra)


def proof_cases(M: int, scale: int) -> list[tuple[int, ProofCase]]:
    """(priority, case): r16 and r128 on the square q/o shape first (the headline target), the
    MLP shapes last; each in fp32 and bf16 weights, with Paper A's dropout and without."""
    d, ff = HIDDEN // scale, INTERMEDIATE // scale
    variants = [(w, p) for p in (HEADLINE_DROPOUT, 0.0) for w in ("float32", "bfloat16")]

    def at(priority, label, K, N):
        ranks = (16, 128 // min(scale, 8))
        layers = [LayerCase(KIND, label, M, K, N, r) for r in ranks]
        return [(priority, ProofCase(layer, w, p)) for layer in layers for w, p in variants]

    return at(HEADLINE, "q/o", d, d) + at(REST, "gate/up", d, ff) + at(REST, "down", ff, d)


def _headline(row: dict) -> bool:
    square = row["K"] == row["N"]
    return square and row["r"] == 16 and row["weights"] == "float32" and row["dropout"] > 0


def proof_targets(parts: dict) -> list[dict]:
    rows = fastpeft_full_rows(parts, KIND, _headline)[:1]
    name = "LoRA r16 4096² fwd+bwd vs"
    return [
        judge_rows(f"{name} frozen linear", rows, "time_vs_base", VS_FROZEN, True),
        judge_rows(f"{name} PEFT", rows, "speedup_vs_peft", VS_PEFT, False),
    ]
