"""Host side of the fixed-order partial sums (kernels/partials.py)."""

import torch
import triton

from ..kernels import partials as kernels
from .launch import launch, target_for

_GPU_BLOCKS = (512, 256, 128)  # 4, 2, 1 elements a thread on 4 warps
_CTAS_PER_SM = 16  # of 4 warps: 2048 threads an SM
_CPU_BLOCK = 1024


def sum_partials(parts: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """scale · parts.sum(0), summed in split order in fp32 and cast to `dtype` (deterministic).
    `parts` is a contiguous fp32 [splits, ...] tensor."""
    out = torch.empty(parts.shape[1:], device=parts.device, dtype=dtype)
    numel = out.numel()
    target = target_for(parts.device)
    wave = target.sm_count * _CTAS_PER_SM
    block = _CPU_BLOCK if target.interpreter else _gpu_block(numel, wave)
    launch(
        kernels.sum_partials_kernel, (triton.cdiv(numel, block),),
        parts, out, parts.shape[0], numel, scale,
        BLOCK=block,
    )  # fmt: skip
    return out


def _gpu_block(numel: int, wave: int) -> int:
    """The widest block that still fills a wave, else one element a thread (the sums of a
    rank-16 adapter's partials have fewer elements than one wave has threads)."""
    return next((b for b in _GPU_BLOCKS if triton.cdiv(numel, b) >= wave), _GPU_BLOCKS[-1])
