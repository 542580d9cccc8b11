"""Fused LoRA for a frozen base linear: y = x Wᵀ + b + s · (drop(x) Aᵀ) Bᵀ.

Shapes: x [M, K], W [N, K], b [N], A [R, K], B [N, R], t = drop(x) Aᵀ [M, R], u = s · dy B [M, R].
The LoRA branch runs in the adapter dtype (PEFT casts x to A's dtype); every product accumulates in
fp32. Five kernels:

    lora_down_kernel     t  = drop(x) Aᵀ                      one pass over x
    lora_fwd_kernel      y  = x Wᵀ + b + s · t Bᵀ             rank-r term inside the accumulator
    lora_dy_b_kernel     u  = s · dy B,  dB partials dyᵀ t    one pass over dy
    lora_da_kernel       dA = uᵀ drop(x)                      mask regenerated from the seed
    lora_dx_kernel       dx = dy W + drop'(u A)               rank-r term inside the accumulator
"""

import triton
import triton.language as tl

from ._common import dropout_keep, grouped_tile, load_tile, mma, store_tile


@triton.jit
def lora_down_kernel(
    x_ptr, a_ptr, t_ptr, seed_ptr,
    M, K, R, p,
    stride_xm, stride_xk, stride_ar, stride_ak, stride_tm, stride_tr,
    HAS_DROPOUT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # Grid: one program per BLOCK_M rows of x; the whole rank (BLOCK_R >= R) stays in registers.
    offs_m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # M·K > 2**31
    offs_r = tl.arange(0, BLOCK_R)
    adapter_dtype = a_ptr.dtype.element_ty
    if HAS_DROPOUT:
        seed = tl.load(seed_ptr)
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = load_tile(x_ptr, offs_m, offs_k, stride_xm, stride_xk, M, K).to(adapter_dtype)
        if HAS_DROPOUT:
            keep = dropout_keep(seed, offs_m, offs_k, K, p)
            x = tl.where(keep, x.to(tl.float32) / (1.0 - p), 0.0).to(adapter_dtype)
        a_t = load_tile(a_ptr, offs_k, offs_r, stride_ak, stride_ar, K, R)
        acc = mma(x, a_t, acc, UPCAST, PRECISION)
    store_tile(t_ptr, acc, offs_m, offs_r, stride_tm, stride_tr, M, R)


@triton.jit
def lora_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, t_ptr, b_ptr, y_ptr,
    M, N, K, R, scaling,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_tm, stride_tr, stride_bn, stride_br,
    stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grid: one program per [BLOCK_M, BLOCK_N] tile of y (grouped order). The base GEMM and the
    # rank-r update s · t Bᵀ share one fp32 accumulator, so y is written once and no [M, N]
    # temporary exists.
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = load_tile(x_ptr, offs_m, offs_k, stride_xm, stride_xk, M, K)
        w_t = load_tile(w_ptr, offs_k, offs_n, stride_wk, stride_wn, K, N)
        acc = mma(x, w_t, acc, UPCAST, PRECISION)
    t = load_tile(t_ptr, offs_m, offs_r, stride_tm, stride_tr, M, R)
    b_t = load_tile(b_ptr, offs_r, offs_n, stride_br, stride_bn, R, N)
    low_rank = mma(t, b_t, tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), UPCAST, PRECISION)
    acc += scaling * low_rank
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    store_tile(y_ptr, acc, offs_m, offs_n, stride_ym, stride_yn, M, N)


@triton.jit
def lora_dy_b_kernel(
    dy_ptr, b_ptr, t_ptr, u_ptr, db_part_ptr,
    M, N, R, scaling,
    stride_dym, stride_dyn, stride_bn, stride_br, stride_tm, stride_tr, stride_um, stride_ur,
    stride_pp, stride_pn, stride_pr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # Grid: one program per BLOCK_M rows of dy. Each dy tile is read once and feeds both
    # u = s · dy B and this block's partial dB_p = dyᵀ t, written to db_part[pid] in fp32; the host
    # sums the partials in a fixed order (deterministic, no atomics).
    pid_m = tl.program_id(0)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    adapter_dtype = b_ptr.dtype.element_ty
    t = load_tile(t_ptr, offs_m, offs_r, stride_tm, stride_tr, M, R)
    acc_u = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        dy = load_tile(dy_ptr, offs_m, offs_n, stride_dym, stride_dyn, M, N).to(adapter_dtype)
        b = load_tile(b_ptr, offs_n, offs_r, stride_bn, stride_br, N, R)
        acc_u = mma(dy, b, acc_u, UPCAST, PRECISION)
        zeros = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
        db_partial = mma(tl.trans(dy), t, zeros, UPCAST, PRECISION)
        part_ptr = db_part_ptr + pid_m * stride_pp
        store_tile(part_ptr, db_partial, offs_n, offs_r, stride_pn, stride_pr, N, R)
    store_tile(u_ptr, scaling * acc_u, offs_m, offs_r, stride_um, stride_ur, M, R)


@triton.jit
def lora_da_kernel(
    x_ptr, u_ptr, seed_ptr, da_ptr,
    M, K, R, p, rows_per_split,
    stride_xm, stride_xk, stride_um, stride_ur, stride_das, stride_dar, stride_dak,
    HAS_DROPOUT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # Grid: (BLOCK_K columns of dA, splits of M). K / BLOCK_K programs alone are under one wave
    # of a large GPU, so M is split in `rows_per_split` chunks (a multiple of BLOCK_M); each
    # program walks its rows in order and writes its own partial dA (split s at s * stride_das;
    # with one split, dA itself), which the host sums in a fixed order: deterministic. The
    # dropout mask is regenerated from the forward's seed.
    offs_k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    split = tl.program_id(1)
    offs_r = tl.arange(0, BLOCK_R)
    adapter_dtype = u_ptr.dtype.element_ty
    if HAS_DROPOUT:
        seed = tl.load(seed_ptr)
    acc = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    first = split.to(tl.int64) * rows_per_split
    for m0 in range(0, rows_per_split, BLOCK_M):
        offs_m = first + m0 + tl.arange(0, BLOCK_M).to(tl.int64)
        x = load_tile(x_ptr, offs_m, offs_k, stride_xm, stride_xk, M, K).to(adapter_dtype)
        if HAS_DROPOUT:
            keep = dropout_keep(seed, offs_m, offs_k, K, p)
            x = tl.where(keep, x.to(tl.float32) / (1.0 - p), 0.0).to(adapter_dtype)
        u_t = load_tile(u_ptr, offs_r, offs_m, stride_ur, stride_um, R, M)
        acc = mma(u_t, x, acc, UPCAST, PRECISION)
    da_ptr += split.to(tl.int64) * stride_das
    store_tile(da_ptr, acc, offs_r, offs_k, stride_dar, stride_dak, R, K)


@triton.jit
def lora_dx_kernel(
    dy_ptr, w_ptr, u_ptr, a_ptr, seed_ptr, dx_ptr,
    M, N, K, R, p,
    stride_dym, stride_dyn, stride_wn, stride_wk, stride_um, stride_ur, stride_ar, stride_ak,
    stride_dxm, stride_dxk,
    HAS_DROPOUT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grid: one program per [BLOCK_M, BLOCK_K] tile of dx (grouped order). dy W and the rank-r
    # term u A (through the regenerated dropout mask) meet in one fp32 accumulator.
    pid_m, pid_k = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_K), GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_r = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        dy = load_tile(dy_ptr, offs_m, offs_n, stride_dym, stride_dyn, M, N)
        w = load_tile(w_ptr, offs_n, offs_k, stride_wn, stride_wk, N, K)
        acc = mma(dy, w, acc, UPCAST, PRECISION)
    u = load_tile(u_ptr, offs_m, offs_r, stride_um, stride_ur, M, R)
    a = load_tile(a_ptr, offs_r, offs_k, stride_ar, stride_ak, R, K)
    low_rank = mma(u, a, tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32), UPCAST, PRECISION)
    if HAS_DROPOUT:
        keep = dropout_keep(tl.load(seed_ptr), offs_m, offs_k, K, p)
        low_rank = tl.where(keep, low_rank / (1.0 - p), 0.0)
    store_tile(dx_ptr, acc + low_rank, offs_m, offs_k, stride_dxm, stride_dxk, M, K)


# The static model's analytic cost of each launch (fastpeft/static): the matrix products' FLOPs,
# and the minimum DRAM bytes where the tensor arguments (each read or written once) do not say it
# (None). `a` maps argument names to the launch's values; `grid` is its grid.
COSTS = {
    "lora_down_kernel": lambda a, grid: (2 * a["M"] * a["K"] * a["R"], None),
    "lora_fwd_kernel": lambda a, grid: (2 * a["M"] * a["N"] * (a["K"] + a["R"]), None),
    "lora_dy_b_kernel": lambda a, grid: (4 * a["M"] * a["N"] * a["R"], None),  # u and dB
    "lora_da_kernel": lambda a, grid: (2 * a["M"] * a["K"] * a["R"], None),
    "lora_dx_kernel": lambda a, grid: (2 * a["M"] * a["K"] * (a["N"] + a["R"]), None),
}
