"""The gate/up adapter pair's bench cases: Paper A's two pre-adapters on one input (gate_proj's
and up_proj's), the two eager adapters against the fused pair op, at Llama-7B's hidden size and
the single adapter's bottlenecks (providers: see _bottleneck.py).

Each provider is a Llama-style MLP, down(act(gate(u)) * up(v)), whose gate_proj and up_proj carry
the pre-adapters that `fastpeft.add_adapters` puts there on a real model: "eager" runs the two
`BottleneckAdapter` modules through their hooks, "fastpeft" is the MLP patched by
`fastpeft.patch`, whose fused forward computes u and v with one `adapter_pair` op reading x once.
Its projections are narrow (WIDTH outputs) so that the timed work is the pair's: they read u and
v as the real projections would, and cost little beside the adapters, where Llama's 11008-wide
ones would bury the pair under three GEMMs tens of times its cost.
"""

import torch
import torch.nn as nn

from ...adapters import AdapterConfig, add_adapters
from . import _bottleneck
from .layer_case import LayerCase, ProofCase, Setup, sizes

KIND = "adapter_pair"
SUITE = "layers"
BASELINE, FLOOR = _bottleneck.BASELINE, _bottleneck.FLOOR
SIZE_NAME, PROOF_VARIES = _bottleneck.SIZE_NAME, _bottleneck.PROOF_VARIES
WIDTH = 16


def cases(device: torch.device, level: str) -> list[LayerCase]:
    s = sizes(device, level)
    return [LayerCase(KIND, "gate/up pre", s.M, d, d, H) for d, H in _bottleneck.shapes(s.scale)]


class NarrowMLP(nn.Module):
    """Llama's MLP with `width` outputs on gate_proj and up_proj."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, width, bias=False)
        self.up_proj = nn.Linear(dim, width, bias=False)
        self.down_proj = nn.Linear(width, dim, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def providers(case: LayerCase, dtype, device, setup: Setup) -> dict:
    torch.manual_seed(0)
    mlp = NarrowMLP(case.K, WIDTH).to(device=device, dtype=dtype)
    config = AdapterConfig(
        bottleneck_size=case.r,
        dropout=_bottleneck.DROPOUT,
        pre_modules=("gate_proj", "up_proj"),
        post_modules=(),
        dtype=setup.weights,
    )
    # The MLP is its own one decoder layer; add_adapters freezes the projections.
    add_adapters(mlp, config, decoder_layers=nn.ModuleList([mlp]), fused=False)
    return _bottleneck.providers(mlp, setup)


def cost(case: LayerCase, elem: int):
    # The pair alone: the narrow projections around it are left out (a lower bound).
    return _bottleneck.cost(case, elem, adapters=2)


def proof_cases(M: int, scale: int) -> list[tuple[int, ProofCase]]:
    return []  # not among the proof suite's targets (yet)


def proof_targets(parts: dict) -> list[dict]:
    return []
