"""Host side of the keep-mask kernel: the dropout mask the fused kernels regenerate, written out."""

import torch
import triton

from ..kernels import dropout as kernels
from .launch import launch

_BLOCK = 32


def keep_mask(seed: torch.Tensor, M: int, K: int, p: float) -> torch.Tensor:
    """The [M, K] bool keep-mask the kernels derive from the seed at seed[0] (tests only)."""
    out = torch.empty((M, K), device=seed.device, dtype=torch.int8)
    grid = (triton.cdiv(M, _BLOCK), triton.cdiv(K, _BLOCK))
    launch(kernels.keep_mask_kernel, grid, seed, out, M, K, p, BLOCK_M=_BLOCK, BLOCK_K=_BLOCK)
    return out.bool()
