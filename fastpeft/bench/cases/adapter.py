"""The single bottleneck adapter's bench cases: a post-adapter at Llama-7B's hidden size, eager
against fused (providers: see _bottleneck.py); the proof suite varies the weights' dtype."""

import torch
import torch.nn as nn

from ...adapters import AdapterConfig
from ...adapters.modules import BottleneckAdapter
from ..proof_targets import fastpeft_full_rows, judge_rows
from . import _bottleneck
from .layer_case import HIDDEN, MAIN, LayerCase, ProofCase, Setup, sizes

KIND = "adapter"
SUITE = "layers"
BASELINE, FLOOR = _bottleneck.BASELINE, _bottleneck.FLOOR
SIZE_NAME, PROOF_VARIES = _bottleneck.SIZE_NAME, _bottleneck.PROOF_VARIES
VS_EAGER = 2.0  # at least twice as fast as the eager module, in the worst case
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def cases(device: torch.device, level: str) -> list[LayerCase]:
    s = sizes(device, level)
    return [LayerCase(KIND, "post", s.M, d, d, H) for d, H in _bottleneck.shapes(s.scale)]


class OneAdapter(nn.Module):
    def __init__(self, adapter: BottleneckAdapter):
        super().__init__()
        self.adapter = adapter

    def forward(self, x):
        return self.adapter(x)


def providers(case: LayerCase, dtype, device, setup: Setup) -> dict:
    torch.manual_seed(0)
    config = AdapterConfig(bottleneck_size=case.r, dropout=_bottleneck.DROPOUT)
    adapter = BottleneckAdapter(case.K, config, _DTYPES[setup.weights], device=device)
    return _bottleneck.providers(OneAdapter(adapter), setup)


def cost(case: LayerCase, elem: int):
    return _bottleneck.cost(case, elem)


def proof_cases(M: int, scale: int) -> list[tuple[int, ProofCase]]:
    """(priority, case): Paper A's adapter (H=256) in fp32 and bf16 weights, a main case."""
    d, H = HIDDEN // scale, 256 // min(scale, 8)
    return [(MAIN, ProofCase(LayerCase(KIND, "post", M, d, d, H), w)) for w in _DTYPES]


def proof_targets(parts: dict) -> list[dict]:
    rows = fastpeft_full_rows(parts, KIND)
    return [
        judge_rows(
            "adapter fwd+bwd vs eager (worst case)", rows, "speedup_vs_eager", VS_EAGER, False
        )
    ]
