"""What the bottleneck adapter cases (one adapter, the gate/up pair) share: the sizes, the
providers and the cost model.

Providers: "eager" (fastpeft's eager modules, unpatched: PEFT has no bottleneck adapters),
"eager+compile", "fastpeft" (a copy of the eager module, which `fastpeft.patch` then patches).
"""

import copy

import torch
import torch.nn as nn

from .layer_case import HIDDEN, Cost, LayerCase, Setup

BASELINE = "eager"
FLOOR = None  # no frozen module to bound them: an adapter is all method
SIZE_NAME = "H"
PROOF_VARIES = ("weights",)  # the adapters keep Paper A's dropout, DROPOUT
DROPOUT = 0.05


def shapes(scale: int) -> list[tuple[int, int]]:
    """(d, H): Llama-7B's hidden size, bottlenecks 64 and 256 (Paper A's)."""
    return [(HIDDEN // scale, H) for H in (64 // scale or 8, 256 // scale)]


def providers(eager: nn.Module, setup: Setup) -> dict[str, nn.Module]:
    found = {"eager": eager}
    if setup.compile_:
        found["eager+compile"] = torch.compile(copy.deepcopy(eager))
    found["fastpeft"] = copy.deepcopy(eager)
    return found


def cost(case: LayerCase, elem: int, adapters: int = 1) -> Cost:
    """`adapters` adapters (down [H, d], up [d, H], fp32) on one input x [M, d], read once:
    the forward writes each output, the backward reads x and each output's grad and writes dx;
    the fp32 hidden [M, H] is written once and read back (SPEC §3 cost model)."""
    M, d, H, n = case.M, case.K, case.r, adapters
    return Cost(
        fwd_flops=4 * n * M * d * H,
        bwd_flops=8 * n * M * d * H,
        fwd_bytes=elem * (1 + n) * M * d + 4 * n * (M * H + 2 * d * H),
        bwd_bytes=elem * (2 + n) * M * d + 4 * n * (2 * M * H + 4 * d * H),
    )
