"""The PEFT-wrapped linear that the LoRA and IA3 cases share: its shapes, its providers and the
frozen linear's cost.

Providers: "base" (the frozen linear alone, input grads only: the floor), "peft" (PEFT
defaults: fp32 adapters), "peft-bf16" (adapters in the base dtype; 16-bit bases only),
"peft+compile" (torch.compile of the PEFT model), "fastpeft" (a copy of the PEFT model with the
case's weight dtype, which `fastpeft.patch` then patches).
"""

import copy
from collections.abc import Callable

import torch
import torch.nn as nn

from .layer_case import HIDDEN, INTERMEDIATE, Cost, LayerCase, Setup

BASELINE = "peft"
FLOOR = "base"  # the frozen linear alone: no method can cost less
# (label, K, N): Llama-7B projections: q/o, gate/up, down, and k/v with GQA (8 of 32 heads).
LLM_SHAPES = (
    ("q/o", HIDDEN, HIDDEN),
    ("gate/up", HIDDEN, INTERMEDIATE),
    ("down", INTERMEDIATE, HIDDEN),
    ("k/v gqa", HIDDEN, HIDDEN // 4),
)


def shapes(scale: int) -> list[tuple[str, int, int]]:
    return [(label, K // scale, N // scale) for label, K, N in LLM_SHAPES]


class OneLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.proj = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x):
        return self.proj(x)


def peft_linear(case: LayerCase, config, dtype, device, autocast_adapter_dtype: bool,
                init: Callable[[nn.Module], None] | None) -> nn.Module:  # fmt: skip
    """`get_peft_model` of one frozen linear with `config` (PEFT's `autocast_adapter_dtype=True`
    default keeps fp32 adapters on a 16-bit base); `init` then sets the adapter weights."""
    from peft import get_peft_model

    torch.manual_seed(0)
    base = OneLinear(case.K, case.N).to(device=device, dtype=dtype).requires_grad_(False)
    model = get_peft_model(
        base, copy.deepcopy(config), autocast_adapter_dtype=autocast_adapter_dtype
    )
    if init is not None:
        with torch.no_grad():
            init(model)
    return model


def providers(case: LayerCase, config, dtype, device, setup: Setup, init=None) -> dict:
    peft = peft_linear(case, config, dtype, device, True, init)
    base = copy.deepcopy(peft.get_base_model())
    base.proj = base.proj.base_layer  # the plain frozen linear inside the PEFT layer
    found = {"base": base, "peft": peft}
    if dtype != torch.float32:
        found["peft-bf16"] = peft_linear(case, config, dtype, device, False, init)
    if setup.compile_:
        found["peft+compile"] = torch.compile(copy.deepcopy(peft))
    mine = peft if setup.weights == "float32" else found.get("peft-bf16", peft)
    found["fastpeft"] = copy.deepcopy(mine)
    return found


def linear_cost(case: LayerCase, elem: int, fwd_flops: float = 0, bwd_flops: float = 0) -> Cost:
    """The frozen linear's FLOPs and bytes (SPEC §1–§2 cost model), plus a method's own FLOPs."""
    M, K, N = case.M, case.K, case.N
    return Cost(
        fwd_flops=2 * M * K * N + fwd_flops,
        bwd_flops=2 * M * K * N + bwd_flops,
        fwd_bytes=elem * (M * K + N * K + M * N),
        bwd_bytes=elem * (M * N + M * K + N * K + M * K),
    )
