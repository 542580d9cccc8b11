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

from ._common import dropout_keep, mma


@triton.jit
def _grouped_tile(pid, num_m, num_n, GROUP_M: tl.constexpr):
    # Walk GROUP_M row-tiles down a column of tiles before moving right, so the W tiles a group
    # shares stay in L2 (the usual grouped GEMM ordering).
    per_group = GROUP_M * num_n
    group = pid // per_group
    first_m = group * GROUP_M
    rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % rows
    pid_n = (pid % per_group) // rows
    return pid_m, pid_n


@triton.jit
def lora_down_kernel(
    x_ptr, a_ptr, t_ptr, seed_ptr,
    M, K, R, p,
    stride_xm, stride_xk, stride_ar, stride_ak, stride_tm, stride_tr,
    HAS_DROPOUT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # Grid: one program per BLOCK_M rows of x; the whole rank (BLOCK_R >= R) stays in registers.
    pid_m = tl.program_id(0)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # M·K may pass 2**31
    offs_r = tl.arange(0, BLOCK_R)
    mask_m = offs_m < M
    mask_r = offs_r < R
    adapter_dtype = a_ptr.dtype.element_ty
    if HAS_DROPOUT:
        seed = tl.load(seed_ptr)
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(
            x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
            mask=mask_m[:, None] & mask_k[None, :],
            other=0.0,
        ).to(adapter_dtype)
        if HAS_DROPOUT:
            keep = dropout_keep(seed, offs_m, offs_k, K, p)
            x = tl.where(keep, x.to(tl.float32) / (1.0 - p), 0.0).to(adapter_dtype)
        a_t = tl.load(
            a_ptr + offs_r[None, :] * stride_ar + offs_k[:, None] * stride_ak,
            mask=mask_k[:, None] & mask_r[None, :],
            other=0.0,
        )
        acc = mma(x, a_t, acc, UPCAST, PRECISION)
    tl.store(
        t_ptr + offs_m[:, None] * stride_tm + offs_r[None, :] * stride_tr,
        acc.to(t_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_r[None, :],
    )


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
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    pid_m, pid_n = _grouped_tile(tl.program_id(0), num_m, num_n, GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # M·K may pass 2**31
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    mask_m = offs_m < M
    mask_n = offs_n < N
    mask_r = offs_r < R
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(
            x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
            mask=mask_m[:, None] & mask_k[None, :],
            other=0.0,
        )
        w_t = tl.load(
            w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk,
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        )
        acc = mma(x, w_t, acc, UPCAST, PRECISION)
    t = tl.load(
        t_ptr + offs_m[:, None] * stride_tm + offs_r[None, :] * stride_tr,
        mask=mask_m[:, None] & mask_r[None, :],
        other=0.0,
    )
    b_t = tl.load(
        b_ptr + offs_n[None, :] * stride_bn + offs_r[:, None] * stride_br,
        mask=mask_r[:, None] & mask_n[None, :],
        other=0.0,
    )
    low_rank = mma(t, b_t, tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), UPCAST, PRECISION)
    acc += scaling * low_rank
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(
        y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
        acc.to(y_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_n[None, :],
    )


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
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # M·K may pass 2**31
    offs_r = tl.arange(0, BLOCK_R)
    mask_m = offs_m < M
    mask_r = offs_r < R
    adapter_dtype = b_ptr.dtype.element_ty
    t = tl.load(
        t_ptr + offs_m[:, None] * stride_tm + offs_r[None, :] * stride_tr,
        mask=mask_m[:, None] & mask_r[None, :],
        other=0.0,
    )
    acc_u = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        dy = tl.load(
            dy_ptr + offs_m[:, None] * stride_dym + offs_n[None, :] * stride_dyn,
            mask=mask_m[:, None] & mask_n[None, :],
            other=0.0,
        ).to(adapter_dtype)
        b = tl.load(
            b_ptr + offs_n[:, None] * stride_bn + offs_r[None, :] * stride_br,
            mask=mask_n[:, None] & mask_r[None, :],
            other=0.0,
        )
        acc_u = mma(dy, b, acc_u, UPCAST, PRECISION)
        zeros = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
        db_partial = mma(tl.trans(dy), t, zeros, UPCAST, PRECISION)
        tl.store(
            db_part_ptr
            + pid_m * stride_pp
            + offs_n[:, None] * stride_pn
            + offs_r[None, :] * stride_pr,
            db_partial,
            mask=mask_n[:, None] & mask_r[None, :],
        )
    tl.store(
        u_ptr + offs_m[:, None] * stride_um + offs_r[None, :] * stride_ur,
        (scaling * acc_u).to(u_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_r[None, :],
    )


@triton.jit
def lora_da_kernel(
    x_ptr, u_ptr, seed_ptr, da_ptr,
    M, K, R, p,
    stride_xm, stride_xk, stride_um, stride_ur, stride_dar, stride_dak,
    HAS_DROPOUT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # Grid: one program per BLOCK_K columns of dA; it walks all of M in order, so the reduction
    # over tokens is deterministic. The dropout mask is regenerated from the forward's seed.
    pid_k = tl.program_id(0)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_r = tl.arange(0, BLOCK_R)
    mask_k = offs_k < K
    mask_r = offs_r < R
    adapter_dtype = u_ptr.dtype.element_ty
    if HAS_DROPOUT:
        seed = tl.load(seed_ptr)
    acc = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    for m0 in range(0, M, BLOCK_M):
        offs_m = (m0 + tl.arange(0, BLOCK_M)).to(tl.int64)
        mask_m = offs_m < M
        x = tl.load(
            x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
            mask=mask_m[:, None] & mask_k[None, :],
            other=0.0,
        ).to(adapter_dtype)
        if HAS_DROPOUT:
            keep = dropout_keep(seed, offs_m, offs_k, K, p)
            x = tl.where(keep, x.to(tl.float32) / (1.0 - p), 0.0).to(adapter_dtype)
        u = tl.load(
            u_ptr + offs_m[:, None] * stride_um + offs_r[None, :] * stride_ur,
            mask=mask_m[:, None] & mask_r[None, :],
            other=0.0,
        )
        acc = mma(tl.trans(u), x, acc, UPCAST, PRECISION)
    tl.store(
        da_ptr + offs_r[:, None] * stride_dar + offs_k[None, :] * stride_dak,
        acc.to(da_ptr.dtype.element_ty),
        mask=mask_r[:, None] & mask_k[None, :],
    )


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
    num_m = tl.cdiv(M, BLOCK_M)
    num_k = tl.cdiv(K, BLOCK_K)
    pid_m, pid_k = _grouped_tile(tl.program_id(0), num_m, num_k, GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # M·K may pass 2**31
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_r = tl.arange(0, BLOCK_R)
    mask_m = offs_m < M
    mask_k = offs_k < K
    mask_r = offs_r < R
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        dy = tl.load(
            dy_ptr + offs_m[:, None] * stride_dym + offs_n[None, :] * stride_dyn,
            mask=mask_m[:, None] & mask_n[None, :],
            other=0.0,
        )
        w = tl.load(
            w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk,
            mask=mask_n[:, None] & mask_k[None, :],
            other=0.0,
        )
        acc = mma(dy, w, acc, UPCAST, PRECISION)
    u = tl.load(
        u_ptr + offs_m[:, None] * stride_um + offs_r[None, :] * stride_ur,
        mask=mask_m[:, None] & mask_r[None, :],
        other=0.0,
    )
    a = tl.load(
        a_ptr + offs_r[:, None] * stride_ar + offs_k[None, :] * stride_ak,
        mask=mask_r[:, None] & mask_k[None, :],
        other=0.0,
    )
    low_rank = mma(u, a, tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32), UPCAST, PRECISION)
    if HAS_DROPOUT:
        keep = dropout_keep(tl.load(seed_ptr), offs_m, offs_k, K, p)
        low_rank = tl.where(keep, low_rank / (1.0 - p), 0.0)
    acc += low_rank
    tl.store(
        dx_ptr + offs_m[:, None] * stride_dxm + offs_k[None, :] * stride_dxk,
        acc.to(dx_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_k[None, :],
    )


@triton.jit
def dropout_keep_mask_kernel(
    seed_ptr, out_ptr, M, K, p,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # Writes the keep-mask the LoRA kernels use for an [M, K] input (for tests and debugging only;
    # the training path never materialises it).
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    keep = dropout_keep(tl.load(seed_ptr), offs_m, offs_k, K, p)
    mask = (offs_m < M)[:, None] & (offs_k < K)[None, :]
    out_offsets = offs_m.to(tl.int64)[:, None] * K + offs_k[None, :]
    tl.store(out_ptr + out_offsets, keep.to(tl.int8), mask=mask)
