"""Host side of the fixed-order partial sums (kernels/partials.py)."""

import torch
import triton

from ..kernels import partials as kernels
from .launch import launch, target_for

# (elements a CTA, warps): 4, 2, 1 elements a thread on 4 warps, then one warp a CTA, with
# the CTAs an SM holds (2048 threads, at most 32 CTAs).
_GPU_BLOCKS = ((512, 4, 16), (256, 4, 16), (128, 4, 16), (32, 1, 32))
_CPU_BLOCK = 1024


def sum_partials(parts: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """scale · parts.sum(0), summed in split order in fp32 and cast to `dtype` (deterministic).
    `parts` is a contiguous fp32 [splits, ...] tensor."""
    out = torch.empty(parts.shape[1:], device=parts.device, dtype=dtype)
    numel = out.numel()
    target = target_for(parts.device)
    block, warps = (_CPU_BLOCK, 4) if target.interpreter else _gpu_block(numel, target.sm_count)
    launch(
        kernels.sum_partials_kernel, (triton.cdiv(numel, block),),
        parts, out, parts.shape[0], numel, scale,
        BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return out


def _gpu_block(numel: int, sms: int) -> tuple[int, int]:
    """(elements a CTA, warps): the widest block that still fills a wave, else one element a
    thread on one warp (the sums of a rank-16 adapter's partials have fewer elements than one
    wave has threads: they take a few microseconds however they are cut)."""
    for block, warps, per_sm in _GPU_BLOCKS:
        if triton.cdiv(numel, block) >= sms * per_sm:
            return block, warps
    return _GPU_BLOCKS[-1][:2]
