"""`BottleneckAdapter`: the eager module, SPEC §3 literally (patching swaps in the fused op)."""

import torch
import torch.nn as nn

from ..reference.adapter import ACTIVATIONS
from .config import AdapterConfig

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class BottleneckAdapter(nn.Module):
    """out = residual + scaling · up(act(down(dropout(z)))), residual = z unless given.

    z is cast to the adapter's dtype for the bottleneck branch and the sum is rounded once to the
    residual's dtype, as PEFT does for its fp32 adapters on a 16-bit base.
    """

    def __init__(
        self, dim: int, config: AdapterConfig, dtype: torch.dtype, device=None, out_dim=None
    ):
        super().__init__()
        size = config.bottleneck_size
        self.down = nn.Linear(dim, size, bias=False, dtype=dtype, device=device)
        # A parallel adapter maps the module's input to its output size (in != out is possible).
        self.up = nn.Linear(size, out_dim or dim, bias=False, dtype=dtype, device=device)
        self.dropout = nn.Dropout(config.dropout)
        self.non_linearity = config.non_linearity
        self.scaling = float(config.scaling)
        self.reset_parameters(config.init)

    @staticmethod
    def resolve_dtype(config: AdapterConfig, module_dtype: torch.dtype) -> torch.dtype:
        return module_dtype if config.dtype is None else _DTYPES[config.dtype]

    def reset_parameters(self, init: str) -> None:
        nn.init.normal_(self.down.weight, std=0.02)
        if init == "bert":
            nn.init.normal_(self.up.weight, std=0.02)
        else:  # "lora": the adapter starts as the identity
            nn.init.zeros_(self.up.weight)

    def forward(self, z: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        residual = z if residual is None else residual
        hidden = self.down(self.dropout(z.to(self.down.weight.dtype)))
        delta = self.up(ACTIVATIONS[self.non_linearity](hidden)) * self.scaling
        return (residual + delta).to(residual.dtype)

    def extra_repr(self) -> str:
        return f"non_linearity={self.non_linearity}, scaling={self.scaling}"
