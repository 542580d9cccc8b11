"""The dropout keep-mask every fused kernel regenerates, written out (tests and debugging only)."""

import triton
import triton.language as tl

from ._common import dropout_keep, store_tile


@triton.jit
def keep_mask_kernel(
    seed_ptr, out_ptr, M, K, p,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # The keep-mask the LoRA and adapter kernels apply to an [M, K] input for the seed at
    # seed_ptr, as int8. The training path never materialises it.
    offs_m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    keep = dropout_keep(tl.load(seed_ptr), offs_m, offs_k, K, p)
    store_tile(out_ptr, keep.to(tl.int8), offs_m, offs_k, K, 1, M, K)


# The static model's analytic cost of each launch (see kernels/lora.py's COSTS).
COSTS = {"keep_mask_kernel": lambda a, grid: (0, None)}
