"""Fixed-order sums of fp32 partial results (split reductions), so they stay deterministic.

sum_partials_kernel    out = scale · Σ_s parts[s]     s = 0, 1, ... in order, fp32
"""

import triton
import triton.language as tl


@triton.jit
def sum_partials_kernel(
    parts_ptr, out_ptr, splits, numel, scale,
    BLOCK: tl.constexpr,
):  # fmt: skip
    # Grid: one program per BLOCK elements of the contiguous [splits, numel] partials. Each
    # element's partials are added in split order in fp32, scaled once and cast to out's dtype:
    # the same bits on every run, whatever the launch order of the kernels that wrote them.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    ptrs = parts_ptr + offs
    for _ in range(0, splits):
        acc += tl.load(ptrs, mask=mask, other=0.0)
        ptrs += numel  # pointer arithmetic is 64-bit: splits * numel may pass 2**31
    tl.store(out_ptr + offs, (acc * scale).to(out_ptr.dtype.element_ty), mask=mask)


# The static model's analytic cost of each launch (see kernels/lora.py's COSTS): no products;
# every partial read once and the result written once (the tensor arguments say it).
COSTS = {"sum_partials_kernel": lambda a, grid: (0, None)}

# The static model's L2 traffic beyond each tensor's one DRAM read (see kernels/adapter.py's
# REREADS): none, every partial is read once.
REREADS = {"sum_partials_kernel": lambda a: 0}
