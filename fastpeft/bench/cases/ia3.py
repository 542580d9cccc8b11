"""IA3's bench cases: a PEFT IA3 linear at Paper A's targets, scaling the output (q/o, k/v) or
the input (down_proj, a feed-forward module), against PEFT (providers: see _peft.py). Its weights
are a vector PEFT keeps in fp32, so its proof cases vary nothing."""

import torch

from ..proof_targets import fastpeft_full_rows, judge_rows
from . import _peft
from .layer_case import HIDDEN, INTERMEDIATE, MAIN, REST, LayerCase, ProofCase, Setup, sizes

KIND = "ia3"
SUITE = "layers"
BASELINE, FLOOR = _peft.BASELINE, _peft.FLOOR
SIZE_NAME = None  # no rank
PROOF_VARIES = ()
VS_FROZEN = 1.03  # at most 3% slower than the frozen linear alone


def cases(device: torch.device, level: str) -> list[LayerCase]:
    s = sizes(device, level)
    return [LayerCase(KIND, label, s.M, K, N, feedforward=label == "down")
            for label, K, N in _peft.shapes(s.scale) if label != "gate/up"]  # fmt: skip


def _away_from_identity(model) -> None:
    # IA3 starts at ones (the identity): make it do something.
    for name, param in model.named_parameters():
        if ".ia3_l." in name:
            param.copy_(1.0 + 0.3 * torch.randn_like(param))


def providers(case: LayerCase, dtype, device, setup: Setup) -> dict:
    from peft import IA3Config

    config = IA3Config(
        target_modules=["proj"], feedforward_modules=["proj"] if case.feedforward else []
    )
    return _peft.providers(case, config, dtype, device, setup, init=_away_from_identity)


def cost(case: LayerCase, elem: int):
    return _peft.linear_cost(case, elem)  # the scaling is elementwise: no FLOPs worth counting


def proof_cases(M: int, scale: int) -> list[tuple[int, ProofCase]]:
    """(priority, case): output scaling (q/o) and input scaling (down) among the main cases,
    the gate/up shape last."""
    d, ff = HIDDEN // scale, INTERMEDIATE // scale
    return [
        (MAIN, ProofCase(LayerCase(KIND, "q/o", M, d, d))),
        (MAIN, ProofCase(LayerCase(KIND, "down", M, ff, d, feedforward=True))),
        (REST, ProofCase(LayerCase(KIND, "gate/up", M, d, ff))),
    ]


def proof_targets(parts: dict) -> list[dict]:
    rows = fastpeft_full_rows(parts, KIND)
    return [
        judge_rows(
            "IA3 fwd+bwd vs frozen linear (worst case)", rows, "time_vs_base", VS_FROZEN, True
        )
    ]
