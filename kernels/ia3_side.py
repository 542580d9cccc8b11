"""The IA3 hybrid path's side kernel: the column scale and the dl partials beside cuBLAS GEMMs.

One kernel for the four elementwise steps the hybrid path (fastpeft/triton_path/ia3_hybrid.py)
runs around its cuBLAS products; src [M, C], l [C]:

    out          = src ⊙ l                (fp32 multiply, rounded once to out's dtype)
    part[pid_m]  = Σ over the block's rows of src ⊙ other     (fp32; summed on the host)

    output case, forward:   src = z (cuBLAS's x Wᵀ + b)   out = y
    output case, backward:  src = dy, other = z            out = dy ⊙ l (cuBLAS then: dx = · W)
    input case, forward:    src = x                        out = x ⊙ l  (cuBLAS then: · Wᵀ + b)
    input case, backward:   src = g (cuBLAS's dy W), other = x          out = dx

src is read once for both. Each partial is written by exactly one program (deterministic).
"""

import triton
import triton.language as tl

from ._common import load_tile, store_tile
from ._rereads import blocks, each_extra


@triton.jit
def ia3_scale_kernel(
    src_ptr, l_ptr, out_ptr, other_ptr, part_ptr,
    M, C,
    stride_sm, stride_sc, stride_om, stride_oc, stride_tm, stride_tc, stride_pp, stride_pc,
    STORE_OUT: tl.constexpr, NEED_DL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # Grid: (m-blocks, c-blocks), one [BLOCK_M, BLOCK_C] tile each.
    pid_m = tl.program_id(0)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # M·C > 2**31
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    src = load_tile(src_ptr, offs_m, offs_c, stride_sm, stride_sc, M, C).to(tl.float32)
    if STORE_OUT:
        scale = tl.load(l_ptr + offs_c, mask=offs_c < C, other=0.0).to(tl.float32)
        store_tile(out_ptr, src * scale[None, :], offs_m, offs_c, stride_om, stride_oc, M, C)
    if NEED_DL:
        other = load_tile(other_ptr, offs_m, offs_c, stride_tm, stride_tc, M, C).to(tl.float32)
        tl.store(
            part_ptr + pid_m * stride_pp + offs_c * stride_pc,
            tl.sum(src * other, axis=0),
            mask=offs_c < C,
        )


# The static model's analytic cost of each launch (see kernels/lora.py's COSTS): no products.
COSTS = {"ia3_scale_kernel": lambda a, grid: (0, None)}

# The static model's L2 traffic beyond each tensor's one DRAM read (see kernels/adapter.py's
# REREADS): l's slice once per row block when the scaled tensor is stored.
REREADS = {
    "ia3_scale_kernel": lambda a: (
        each_extra(a, "l_ptr", blocks(a, "M", "BLOCK_M")) if a["STORE_OUT"] else 0
    ),
}
