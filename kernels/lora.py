"""Fused LoRA for a frozen base linear: y = x Wᵀ + b + s · (drop(x) Aᵀ) Bᵀ.

Shapes: x [M, K], W [N, K], b [N], A [R, K], B [N, R], t = drop(x) Aᵀ [M, R], u = s · dy B [M, R].
The LoRA branch runs in the adapter dtype (PEFT casts x to A's dtype); every product accumulates in
fp32. Five kernels:

    lora_down_kernel     t  = drop(x) Aᵀ                      one pass over x; stores the mask bits
                         (up to three adapters on one input: x read once for all)
    lora_fwd_kernel      y  = x Wᵀ + b + s · t Bᵀ             rank-r term inside the accumulator
    lora_dy_b_kernel     u  = s · dy B,  dB partials dyᵀ t    one pass over dy
    lora_da_kernel       dA = uᵀ drop(x)                      the forward's mask; at wide ranks
                         also dBᵀ = tᵀ dy (fewer partials than lora_dy_b_kernel's)
    lora_dx_kernel       dx = dy W + drop'(u A)               rank-r term inside the accumulator;
                         (narrow ranks: dA partials too, x read while the mask is at hand)

Dropout multiplies the kept inputs by 1 / (1 - p); the kernels mask x and apply the scale once to
the fp32 product instead (it is linear), which rounds less than PEFT's scaled copy of x.
The dropout mask reaches the backward one of two ways (fastpeft/triton_path/lora.py picks):
as 1 bit per element the forward stored (M·K/8 bytes), or drawn again from the seed by each
backward kernel (nothing stored, two more Philox passes).
"""

import triton
import triton.language as tl

from ._common import (
    accumulate_x_wt,
    draw_keep,
    dropout_keep,
    grouped_tile,
    load_keep,
    load_tile,
    mma,
    mma_widened,
    store_tile,
)
from ._rereads import blocks, each_extra


@triton.jit
def _down_member(
    x, a_ptr, seed, bits_ptr, acc, offs_m, offs_k, offs_r, k0, M, K, R, p,
    stride_ar, stride_ak, stride_bits,
    HAS_DROPOUT: tl.constexpr, STORE_BITS: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # One adapter's step of lora_down_kernel: its own keep-mask on the shared x tile (masked in
    # x's dtype, two 16-bit values a register, then cast), stored as bits when asked, then
    # acc += drop(x) Aᵀ for this step's columns.
    if HAS_DROPOUT:
        keep = draw_keep(seed, bits_ptr, offs_m, offs_k, k0, K, p, stride_bits, M, STORE_BITS,
                         BLOCK_K)  # fmt: skip
        x = tl.where(keep, x, 0.0)
    a_t = load_tile(a_ptr, offs_k, offs_r, stride_ak, stride_ar, K, R)
    return mma_widened(x, a_t, acc, True, UPCAST, PRECISION)


@triton.jit
def lora_down_kernel(
    x_ptr, a_ptr, a1_ptr, a2_ptr, t_ptr, seed_ptr, seed1_ptr, seed2_ptr, bits_ptr,
    M, K, R, p, cols_per_split,
    stride_xm, stride_xk, stride_ar, stride_ak, stride_ts, stride_tm, stride_tg, stride_tr,
    stride_bits_g, stride_bits,
    MEMBERS: tl.constexpr, HAS_DROPOUT: tl.constexpr, STORE_BITS: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # Grid: (BLOCK_M rows of x, splits of K). The whole rank (BLOCK_R >= R) stays in registers.
    # M / BLOCK_M programs alone are under one wave of a large GPU, so K is split in
    # `cols_per_split` chunks (a multiple of BLOCK_K): split s writes its fp32 partial t at
    # s * stride_ts, which the host sums in a fixed order (deterministic); with one split, t itself.
    # With STORE_BITS the keep-mask drawn here is also stored, 1 bit per element ([M, K / 8]
    # uint8), for the backward kernels to read instead of drawing it again.
    # MEMBERS (1 to 3) adapters of one rank on the same input (q/k/v, gate/up: shared-input
    # LoRA) read each x tile once: member g has its own A (a_ptr, a1_ptr, a2_ptr), seed, keep-mask
    # (bits at g * stride_bits_g) and accumulator, and writes t's member g at g * stride_tg.
    offs_m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # M·K > 2**31
    split = tl.program_id(1)
    offs_r = tl.arange(0, BLOCK_R)
    if HAS_DROPOUT:
        seed = tl.load(seed_ptr)
        if MEMBERS > 1:
            seed1 = tl.load(seed1_ptr)
        if MEMBERS > 2:
            seed2 = tl.load(seed2_ptr)
    else:
        seed, seed1, seed2 = 0, 0, 0
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    first = split * cols_per_split
    for k0 in range(first, tl.minimum(first + cols_per_split, K), BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = load_tile(x_ptr, offs_m, offs_k, stride_xm, stride_xk, M, K)
        acc = _down_member(x, a_ptr, seed, bits_ptr, acc, offs_m, offs_k, offs_r, k0, M, K, R,
                           p, stride_ar, stride_ak, stride_bits, HAS_DROPOUT, STORE_BITS, UPCAST,
                           PRECISION, BLOCK_K)  # fmt: skip
        if MEMBERS > 1:
            acc1 = _down_member(x, a1_ptr, seed1, bits_ptr + stride_bits_g, acc1, offs_m, offs_k,
                                offs_r, k0, M, K, R, p, stride_ar, stride_ak, stride_bits,
                                HAS_DROPOUT, STORE_BITS, UPCAST, PRECISION, BLOCK_K)  # fmt: skip
        if MEMBERS > 2:
            acc2 = _down_member(x, a2_ptr, seed2, bits_ptr + 2 * stride_bits_g, acc2, offs_m,
                                offs_k, offs_r, k0, M, K, R, p, stride_ar, stride_ak, stride_bits,
                                HAS_DROPOUT, STORE_BITS, UPCAST, PRECISION, BLOCK_K)  # fmt: skip
    if HAS_DROPOUT:  # drop(x) = keep ⊙ x / (1 - p): the scale is linear, applied once to t
        keep_scale = 1.0 / (1.0 - p)
        acc, acc1, acc2 = acc * keep_scale, acc1 * keep_scale, acc2 * keep_scale
    t_ptr += split.to(tl.int64) * stride_ts
    store_tile(t_ptr, acc, offs_m, offs_r, stride_tm, stride_tr, M, R)
    if MEMBERS > 1:
        store_tile(t_ptr + stride_tg, acc1, offs_m, offs_r, stride_tm, stride_tr, M, R)
    if MEMBERS > 2:
        store_tile(t_ptr + 2 * stride_tg, acc2, offs_m, offs_r, stride_tm, stride_tr, M, R)


@triton.jit
def lora_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, t_ptr, b_ptr, y_ptr,
    M, N, K, R, scaling,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_tm, stride_tr, stride_bn, stride_br,
    stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr, BASE_IN_Y: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr, RANK_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grid: one program per [BLOCK_M, BLOCK_N] tile of y (grouped order). The rank-r update
    # s · t Bᵀ starts the fp32 accumulator and the base GEMM accumulates onto it: one accumulator
    # (a second [BLOCK_M, BLOCK_N] fp32 one would cost 128 more registers a thread at 128 x 256
    # on 8 warps), y written once, no [M, N] temporary. BASE_IN_Y (the hybrid path): cuBLAS has
    # already written x Wᵀ + b to y, which is read instead of computed, and the update is added
    # in place (PEFT's own order: the base output rounded first, then the sum). RANK_PRECISION:
    # the update's dot precision (plain TF32 for fp32 adapters where y is bf16:
    # launch.rank_term_precision), PRECISION the base GEMM's.
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    t = load_tile(t_ptr, offs_m, offs_r, stride_tm, stride_tr, M, R)
    b_t = load_tile(b_ptr, offs_r, offs_n, stride_br, stride_bn, R, N)
    zeros = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc = scaling * mma(t, b_t, zeros, UPCAST, RANK_PRECISION)
    if BASE_IN_Y:
        acc += load_tile(y_ptr, offs_m, offs_n, stride_ym, stride_yn, M, N).to(tl.float32)
    else:
        acc = accumulate_x_wt(acc, x_ptr, w_ptr, offs_m, offs_n, M, N, K, stride_xm, stride_xk,
                              stride_wn, stride_wk, BLOCK_K, UPCAST, PRECISION)  # fmt: skip
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    store_tile(y_ptr, acc, offs_m, offs_n, stride_ym, stride_yn, M, N)


@triton.jit
def lora_dy_b_kernel(
    dy_ptr, b_ptr, t_ptr, u_ptr, db_part_ptr,
    M, N, R, cols_per_split,
    stride_dym, stride_dyn, stride_bn, stride_br, stride_tm, stride_tr,
    stride_us, stride_um, stride_ur, stride_pp, stride_pn, stride_pr,
    WITH_DB: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # Grid: (BLOCK_M rows of dy, splits of N). Each dy tile is read once and feeds dy B, whose
    # fp32 partial over this split's `cols_per_split` columns goes to u_part[split] (the host sums
    # the splits in a fixed order and scales by s: u = s · dy B), and, WITH_DB, this row block's
    # partial dB_p = dyᵀ t, written to db_part[pid_m] in fp32 and summed by the host in a fixed
    # order (deterministic, no atomics).
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    if WITH_DB:
        t = load_tile(t_ptr, offs_m, offs_r, stride_tm, stride_tr, M, R)
    acc_u = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    first = split * cols_per_split
    for n0 in range(first, tl.minimum(first + cols_per_split, N), BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        dy = load_tile(dy_ptr, offs_m, offs_n, stride_dym, stride_dyn, M, N)
        b = load_tile(b_ptr, offs_n, offs_r, stride_bn, stride_br, N, R)
        acc_u = mma_widened(dy, b, acc_u, True, UPCAST, PRECISION)
        if WITH_DB:
            zeros = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
            db_partial = mma_widened(tl.trans(dy), t, zeros, True, UPCAST, PRECISION)
            part_ptr = db_part_ptr + pid_m.to(tl.int64) * stride_pp
            store_tile(part_ptr, db_partial, offs_n, offs_r, stride_pn, stride_pr, N, R)
    u_ptr += split.to(tl.int64) * stride_us
    store_tile(u_ptr, acc_u, offs_m, offs_r, stride_um, stride_ur, M, R)


@triton.jit
def lora_da_kernel(
    x_ptr, u_ptr, seed_ptr, bits_ptr, da_ptr,
    M, K, R, p, rows_per_split,
    stride_xm, stride_xk, stride_um, stride_ur, stride_bits, stride_das, stride_dar, stride_dak,
    HAS_DROPOUT: tl.constexpr, FROM_BITS: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # Grid: (BLOCK_K columns of dA, splits of M). K / BLOCK_K programs alone are under one wave
    # of a large GPU, so M is split in `rows_per_split` chunks (a multiple of BLOCK_M); each
    # program walks its rows in order and writes its own partial dA (split s at s * stride_das;
    # with one split, dA itself), which the host sums in a fixed order: deterministic. The
    # dropout mask is the forward's: read from its bits (FROM_BITS) or drawn again from its seed.
    # Without dropout it is any split-M product uᵀ x: the host also runs dBᵀ = tᵀ dy through it.
    offs_k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    split = tl.program_id(1)
    offs_r = tl.arange(0, BLOCK_R)
    if HAS_DROPOUT and not FROM_BITS:
        seed = tl.load(seed_ptr)
    acc = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    first = split.to(tl.int64) * rows_per_split
    for m0 in range(0, rows_per_split, BLOCK_M):
        offs_m = first + m0 + tl.arange(0, BLOCK_M).to(tl.int64)
        x = load_tile(x_ptr, offs_m, offs_k, stride_xm, stride_xk, M, K)
        if HAS_DROPOUT:
            if FROM_BITS:
                keep = load_keep(bits_ptr, offs_m, offs_k, stride_bits, M, K)
            else:
                keep = dropout_keep(seed, offs_m, offs_k, K, p)
            x = tl.where(keep, x, 0.0)
        u_t = load_tile(u_ptr, offs_r, offs_m, stride_ur, stride_um, R, M)
        acc = mma_widened(u_t, x, acc, False, UPCAST, PRECISION)
    if HAS_DROPOUT:  # 1 / (1 - p) of drop(x), applied once to the sum
        acc = acc * (1.0 / (1.0 - p))
    da_ptr += split.to(tl.int64) * stride_das
    store_tile(da_ptr, acc, offs_r, offs_k, stride_dar, stride_dak, R, K)


@triton.jit
def lora_dx_kernel(
    dy_ptr, w_ptr, u_ptr, a_ptr, seed_ptr, bits_ptr, dx_ptr, x_ptr, da_ptr,
    M, N, K, R, p, blocks_per_program,
    stride_dym, stride_dyn, stride_wn, stride_wk, stride_um, stride_ur, stride_ar, stride_ak,
    stride_bits, stride_dxm, stride_dxk, stride_xm, stride_xk, stride_das, stride_dak,
    stride_dar,
    HAS_DROPOUT: tl.constexpr, FROM_BITS: tl.constexpr, WITH_DA: tl.constexpr,
    BASE_IN_DX: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    RANK_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grid: one program per BLOCK_K columns of dx and `blocks_per_program` consecutive row
    # blocks (grouped order; W's column block stays in L2 across them). Per row block, the
    # rank-r term u A through the forward's dropout mask (its bits, or drawn again) starts the
    # fp32 accumulator and dy W accumulates onto it: one accumulator, as in lora_fwd_kernel.
    # WITH_DA, the same program also reduces dA's partial over its rows, uᵀ drop(x) for its
    # columns, while the mask is at hand: x is read inside a compute-bound kernel instead of by
    # lora_da_kernel, and the partial (one per program row) goes to da_ptr[chunk] in fp32, for a
    # fixed-order host sum. BASE_IN_DX (the hybrid path): cuBLAS has already written dy W to dx,
    # which is read instead of computed, and the rank-r term is added in place. RANK_PRECISION:
    # the rank-r term's dot precision, as in lora_fwd_kernel; dA's partial keeps PRECISION.
    chunks = tl.cdiv(tl.cdiv(M, BLOCK_M), blocks_per_program)
    chunk, pid_k = grouped_tile(tl.program_id(0), chunks, tl.cdiv(K, BLOCK_K), GROUP_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_r = tl.arange(0, BLOCK_R)
    a = load_tile(a_ptr, offs_r, offs_k, stride_ar, stride_ak, R, K)
    if HAS_DROPOUT and not FROM_BITS:
        seed = tl.load(seed_ptr)
    keep_scale = 1.0 / (1.0 - p)  # one division a program; torch's dropout multiplies too
    if WITH_DA:
        acc_da = tl.zeros((BLOCK_K, BLOCK_R), dtype=tl.float32)
    for i in range(0, blocks_per_program):
        offs_m = ((chunk * blocks_per_program + i) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        u = load_tile(u_ptr, offs_m, offs_r, stride_um, stride_ur, M, R)
        if HAS_DROPOUT:
            if FROM_BITS:
                keep = load_keep(bits_ptr, offs_m, offs_k, stride_bits, M, K)
            else:
                keep = dropout_keep(seed, offs_m, offs_k, K, p)
        if WITH_DA:  # dAᵀ partial += drop(x)ᵀ u for this row block, while the mask is at hand
            x = load_tile(x_ptr, offs_m, offs_k, stride_xm, stride_xk, M, K)
            if HAS_DROPOUT:
                x = tl.where(keep, x, 0.0)
            acc_da = mma_widened(tl.trans(x), u, acc_da, True, UPCAST, PRECISION)
        acc = mma(u, a, tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32), UPCAST, RANK_PRECISION)
        if HAS_DROPOUT:
            acc = tl.where(keep, acc * keep_scale, 0.0)
        if BASE_IN_DX:
            acc += load_tile(dx_ptr, offs_m, offs_k, stride_dxm, stride_dxk, M, K).to(tl.float32)
        else:
            for n0 in range(0, N, BLOCK_N):
                offs_n = n0 + tl.arange(0, BLOCK_N)
                dy = load_tile(dy_ptr, offs_m, offs_n, stride_dym, stride_dyn, M, N)
                w = load_tile(w_ptr, offs_n, offs_k, stride_wn, stride_wk, N, K)
                acc = mma(dy, w, acc, UPCAST, PRECISION)
        store_tile(dx_ptr, acc, offs_m, offs_k, stride_dxm, stride_dxk, M, K)
    if WITH_DA:
        if HAS_DROPOUT:  # 1 / (1 - p) of drop(x), applied once to the partial
            acc_da = acc_da * keep_scale
        da_ptr += chunk.to(tl.int64) * stride_das
        store_tile(da_ptr, acc_da, offs_k, offs_r, stride_dak, stride_dar, K, R)


# The static model's analytic cost of each launch (fastpeft/static): the matrix products' FLOPs,
# per product keyed by the tensor arguments whose dtypes set its rate ("a_ptr*x_ptr": A's tile
# times x's, cast to A's dtype; "t_ptr|RANK_PRECISION": a product at the dot precision that
# constexpr names instead of PRECISION; fastpeft/static/costing.work_by_rate), and the minimum DRAM
# bytes where the tensor arguments (each read or written once) do not say it (None). `a` maps
# argument names to the launch's values; `grid` is its grid.
COSTS = {
    "lora_down_kernel": lambda a, grid: (
        {"a_ptr*x_ptr": 2 * a["MEMBERS"] * a["M"] * a["K"] * a["R"]},
        None,
    ),
    "lora_fwd_kernel": lambda a, grid: (
        {
            "x_ptr": 0 if a["BASE_IN_Y"] else 2 * a["M"] * a["N"] * a["K"],
            "t_ptr|RANK_PRECISION": 2 * a["M"] * a["N"] * a["R"],
        },
        _bytes(
            a,
            "y_ptr",
            "t_ptr",
            "b_ptr",
            *(() if a["BASE_IN_Y"] else ("x_ptr", "w_ptr")),
            *(("bias_ptr",) if a["HAS_BIAS"] and not a["BASE_IN_Y"] else ()),
            in_place=a["BASE_IN_Y"],
        ),  # fmt: skip
    ),
    "lora_dy_b_kernel": lambda a, grid: (
        {"b_ptr*dy_ptr": (4 if a["WITH_DB"] else 2) * a["M"] * a["N"] * a["R"]},
        None,
    ),
    "lora_da_kernel": lambda a, grid: ({"u_ptr*x_ptr": 2 * a["M"] * a["K"] * a["R"]}, None),
    "lora_dx_kernel": lambda a, grid: (
        {
            "dy_ptr": 0 if a["BASE_IN_DX"] else 2 * a["M"] * a["K"] * a["N"],
            "u_ptr|RANK_PRECISION": 2 * a["M"] * a["K"] * a["R"],
            "u_ptr*x_ptr": 2 * a["M"] * a["K"] * a["R"] if a["WITH_DA"] else 0,
        },
        _bytes(
            a,
            "dx_ptr",
            "u_ptr",
            "a_ptr",
            *(() if a["BASE_IN_DX"] else ("dy_ptr", "w_ptr")),
            *(("x_ptr", "da_ptr") if a["WITH_DA"] else ()),
            *(("bits_ptr",) if a["HAS_DROPOUT"] and a["FROM_BITS"] else ()),
            in_place=a["BASE_IN_DX"],
        ),  # fmt: skip
    ),
}


def _bytes(a: dict, out: str, *reads: str, in_place: bool) -> int:
    """DRAM bytes of a launch that writes `out` (and reads it first when it adds in place to
    what cuBLAS wrote there: the hybrid path) and reads each of `reads` once; the arguments a
    launch's flags leave unused are not counted."""

    def size(name):
        t = a[name]
        return t.numel() * t.element_size()

    return (2 if in_place else 1) * size(out) + sum(size(name) for name in reads)


def _fwd_rereads(a) -> int:
    # One program per [BLOCK_M, BLOCK_N] tile of y walks all of K (fused) or reads y's tile
    # (hybrid): t and x once per column block, B, W and the bias once per row block.
    m_blocks, n_blocks = blocks(a, "M", "BLOCK_M"), blocks(a, "N", "BLOCK_N")
    extra = each_extra(a, "t_ptr", n_blocks) + each_extra(a, "b_ptr", m_blocks)
    if not a["BASE_IN_Y"]:
        extra += each_extra(a, "x_ptr", n_blocks) + each_extra(a, "w_ptr", m_blocks)
        if a["HAS_BIAS"]:
            extra += each_extra(a, "bias_ptr", m_blocks)
    return extra


def _dx_rereads(a) -> int:
    # One program per column block of dx and chunk of `blocks_per_program` row blocks: A once per
    # chunk; u and dy once per column block; W once per row block walked, the past-the-end ones
    # of the last chunk included (W's loads are masked by N and K, not M).
    m_blocks, k_blocks = blocks(a, "M", "BLOCK_M"), blocks(a, "K", "BLOCK_K")
    chunks = triton.cdiv(m_blocks, a["blocks_per_program"])
    extra = each_extra(a, "a_ptr", chunks) + each_extra(a, "u_ptr", k_blocks)
    if not a["BASE_IN_DX"]:
        extra += each_extra(a, "dy_ptr", k_blocks)
        extra += each_extra(a, "w_ptr", chunks * a["blocks_per_program"])
    return extra


# The static model's L2 traffic beyond each tensor's one DRAM read (see kernels/adapter.py's
# REREADS): the rank-r operands (A, B, t, u) are read once per output block along the other
# dimension, and the GEMMs' x, W and dy as any tiled GEMM's. The mask's bits and x in the
# reductions are read once (each program owns its rows and columns of them).
REREADS = {
    "lora_down_kernel": lambda a: a["MEMBERS"] * each_extra(a, "a_ptr", blocks(a, "M", "BLOCK_M")),
    "lora_fwd_kernel": _fwd_rereads,
    "lora_dy_b_kernel": lambda a: (
        each_extra(a, "b_ptr", blocks(a, "M", "BLOCK_M"))
        + (each_extra(a, "t_ptr", blocks(a, "N", "cols_per_split")) if a["WITH_DB"] else 0)
    ),
    "lora_da_kernel": lambda a: each_extra(a, "u_ptr", blocks(a, "K", "BLOCK_K")),
    "lora_dx_kernel": _dx_rereads,
}
