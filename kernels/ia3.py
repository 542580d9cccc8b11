"""Fused IA3 for a frozen base linear: the learned vector l scales the output or the input.

Shapes: x [M, K], W [N, K], b [N], y [M, N]; l [N] (output scaling) or l [K] (input scaling).
Every product accumulates in fp32. BASE below is the base dtype (W's): where PEFT rounds an
intermediate to it on a 16-bit base with an fp32 l, these kernels round at the same point. Five
kernels:

    ia3_out_fwd_kernel   z = x Wᵀ + b, y = z ⊙ l        scale and bias in the epilogue; z stored
    ia3_out_bwd_kernel   dx = (dy ⊙ l) W                 l applied to dy tiles as they load;
                         dl partials Σ_m dy ⊙ z          by programs of their own, same launch
    ia3_out_dl_kernel    dl partials Σ_m dy ⊙ z          alone, when x needs no gradient
    ia3_in_fwd_kernel    y = (x ⊙ l) Wᵀ + b              l applied to x tiles along K
    ia3_in_bwd_kernel    g = dy W, dx = g ⊙ l,           both in the epilogue of one GEMM
                         dl partials Σ_m x ⊙ g

dl partials are fp32 [num_m_blocks, N or K], one row per BLOCK_M rows of tokens, each element
written by exactly one program; the host sums them in a fixed order (deterministic, no atomics).
"""

import triton
import triton.language as tl

from ._common import accumulate_x_wt, grouped_tile, load_tile, mma, store_tile
from ._rereads import blocks, each_extra


@triton.jit
def _load_vector(ptr, offs, n):
    return tl.load(ptr + offs, mask=offs < n, other=0.0).to(tl.float32)


@triton.jit
def _store_partial(part_ptr, value, pid_m, offs, n, stride_pp, stride_pc):
    tl.store(part_ptr + pid_m * stride_pp + offs * stride_pc, value, mask=offs < n)


@triton.jit
def _scaled_left_product(a_ptr, w_ptr, l_ptr, offs_m, offs_out, M, R, OUT,
                         stride_am, stride_ar, stride_wr, stride_wo,
                         BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_OUT: tl.constexpr,
                         UPCAST: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    # Σ_r round_BASE(a[m, r] · l[r]) · w[r, out] over the reduction R, in fp32: the scaled left
    # operand is formed tile by tile in registers, so no scaled copy of it exists (the input
    # case's forward scales x, the output case's backward dy). W is addressed through
    # (stride_wr, stride_wo), so one helper serves Wᵀ (forward) and W (backward).
    base_dtype = w_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_M, BLOCK_OUT), dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        offs_r = r0 + tl.arange(0, BLOCK_R)
        a = load_tile(a_ptr, offs_m, offs_r, stride_am, stride_ar, M, R).to(tl.float32)
        scaled = (a * _load_vector(l_ptr, offs_r, R)[None, :]).to(base_dtype)
        w = load_tile(w_ptr, offs_r, offs_out, stride_wr, stride_wo, R, OUT)
        acc = mma(scaled, w, acc, UPCAST, PRECISION)
    return acc


@triton.jit
def ia3_out_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, l_ptr, y_ptr, z_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn, stride_zm, stride_zn,
    HAS_BIAS: tl.constexpr, STORE_Z: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grid: one program per [BLOCK_M, BLOCK_N] tile of y (grouped order). z is rounded to BASE
    # before the scale (PEFT scales the base layer's BASE output); it is stored only when the
    # backward needs it for dl.
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # M·K > 2**31
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = accumulate_x_wt(tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), x_ptr, w_ptr, offs_m,
                          offs_n, M, N, K, stride_xm, stride_xk, stride_wn, stride_wk, BLOCK_K,
                          UPCAST, PRECISION)  # fmt: skip
    if HAS_BIAS:
        acc += _load_vector(bias_ptr, offs_n, N)[None, :]
    z = acc.to(w_ptr.dtype.element_ty)
    if STORE_Z:
        store_tile(z_ptr, z, offs_m, offs_n, stride_zm, stride_zn, M, N)
    y = z.to(tl.float32) * _load_vector(l_ptr, offs_n, N)[None, :]
    store_tile(y_ptr, y, offs_m, offs_n, stride_ym, stride_yn, M, N)


@triton.jit
def _dl_tile(dy_ptr, z_ptr, part_ptr, pid_m, pid_n, M, N,
             stride_dym, stride_dyn, stride_zm, stride_zn, stride_pp, stride_pn,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    # part[pid_m, n-block] = Σ over this block's BLOCK_M rows of dy ⊙ z, in fp32: each element
    # of the partials is written by exactly one program.
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dy = load_tile(dy_ptr, offs_m, offs_n, stride_dym, stride_dyn, M, N).to(tl.float32)
    z = load_tile(z_ptr, offs_m, offs_n, stride_zm, stride_zn, M, N).to(tl.float32)
    _store_partial(part_ptr, tl.sum(dy * z, axis=0), pid_m, offs_n, N, stride_pp, stride_pn)


@triton.jit
def ia3_out_bwd_kernel(
    dy_ptr, w_ptr, l_ptr, z_ptr, dx_ptr, part_ptr,
    M, N, K, DL_PROGRAMS,
    stride_dym, stride_dyn, stride_wn, stride_wk, stride_zm, stride_zn, stride_dxm, stride_dxk,
    stride_pp, stride_pn,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    DL_BLOCK_M: tl.constexpr, DL_BLOCK_N: tl.constexpr,
):  # fmt: skip
    # Grid: DL_PROGRAMS programs of dl partials ([DL_BLOCK_M, DL_BLOCK_N] tiles of dy ⊙ z), then
    # one program per [BLOCK_M, BLOCK_K] tile of dx (grouped order). The dl work has programs of
    # its own, so the GEMM's main loop carries no branch and no extra loads: its tiles pipeline
    # as a plain GEMM's, and the memory-bound dl tiles run beside the compute-bound GEMM tiles on
    # the SMs' spare slots (they take no shared memory). They come first so that they are
    # spread over the launch instead of forming its tail. DL_PROGRAMS = 0 without dl.
    pid = tl.program_id(0)
    if pid < DL_PROGRAMS:
        num_n_dl = tl.cdiv(N, DL_BLOCK_N)
        _dl_tile(dy_ptr, z_ptr, part_ptr, pid // num_n_dl, pid % num_n_dl, M, N,
                 stride_dym, stride_dyn, stride_zm, stride_zn, stride_pp, stride_pn,
                 DL_BLOCK_M, DL_BLOCK_N)  # fmt: skip
    else:
        # Each dy tile is scaled by l in fp32 and rounded to BASE (PEFT's autograd hands the
        # base GEMM a BASE dy ⊙ l), so no scaled copy of dy exists.
        pid_m, pid_k = grouped_tile(
            pid - DL_PROGRAMS, tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_K), GROUP_M
        )
        offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        acc = _scaled_left_product(dy_ptr, w_ptr, l_ptr, offs_m, offs_k, M, N, K,
                                   stride_dym, stride_dyn, stride_wn, stride_wk,
                                   BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)  # fmt: skip
        store_tile(dx_ptr, acc, offs_m, offs_k, stride_dxm, stride_dxk, M, K)


@triton.jit
def ia3_out_dl_kernel(
    dy_ptr, z_ptr, part_ptr,
    M, N,
    stride_dym, stride_dyn, stride_zm, stride_zn, stride_pp, stride_pn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # Grid: (m-blocks, n-blocks). The dl partials of the output case when no dx GEMM runs.
    _dl_tile(dy_ptr, z_ptr, part_ptr, tl.program_id(0), tl.program_id(1), M, N,
             stride_dym, stride_dyn, stride_zm, stride_zn, stride_pp, stride_pn,
             BLOCK_M, BLOCK_N)  # fmt: skip


@triton.jit
def ia3_in_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, l_ptr, y_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grid: one program per [BLOCK_M, BLOCK_N] tile of y (grouped order). Each x tile is scaled by
    # l[k-block] in fp32 and rounded to BASE before the dot: PEFT rounds x ⊙ l to BASE before its
    # GEMM, and the tensor cores keep 16-bit operands. No scaled copy of x exists.
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = _scaled_left_product(x_ptr, w_ptr, l_ptr, offs_m, offs_n, M, K, N,
                               stride_xm, stride_xk, stride_wk, stride_wn,
                               BLOCK_M, BLOCK_K, BLOCK_N, UPCAST, PRECISION)  # fmt: skip
    if HAS_BIAS:
        acc += _load_vector(bias_ptr, offs_n, N)[None, :]
    store_tile(y_ptr, acc, offs_m, offs_n, stride_ym, stride_yn, M, N)


@triton.jit
def ia3_in_bwd_kernel(
    dy_ptr, w_ptr, x_ptr, l_ptr, dx_ptr, part_ptr,
    M, N, K,
    stride_dym, stride_dyn, stride_wn, stride_wk, stride_xm, stride_xk, stride_dxm, stride_dxk,
    stride_pp, stride_pk,
    NEED_DX: tl.constexpr, NEED_DL: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grid: one program per [BLOCK_M, BLOCK_K] tile of g = dy W (grouped order). g is rounded to
    # BASE (PEFT's base GEMM returns it in BASE), then the epilogue writes dx = g ⊙ l and this
    # tile's dl partial Σ_m x ⊙ g, so g never goes to memory.
    pid_m, pid_k = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_K), GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        dy = load_tile(dy_ptr, offs_m, offs_n, stride_dym, stride_dyn, M, N)
        w = load_tile(w_ptr, offs_n, offs_k, stride_wn, stride_wk, N, K)
        acc = mma(dy, w, acc, UPCAST, PRECISION)
    g = acc.to(w_ptr.dtype.element_ty).to(tl.float32)
    if NEED_DL:
        x = load_tile(x_ptr, offs_m, offs_k, stride_xm, stride_xk, M, K).to(tl.float32)
        _store_partial(part_ptr, tl.sum(x * g, axis=0), pid_m, offs_k, K, stride_pp, stride_pk)
    if NEED_DX:
        dx = g * _load_vector(l_ptr, offs_k, K)[None, :]
        store_tile(dx_ptr, dx, offs_m, offs_k, stride_dxm, stride_dxk, M, K)


# The static model's analytic cost of each launch (see kernels/lora.py's COSTS).
COSTS = {
    "ia3_out_fwd_kernel": lambda a, grid: (2 * a["M"] * a["N"] * a["K"], None),
    "ia3_in_fwd_kernel": lambda a, grid: (2 * a["M"] * a["N"] * a["K"], None),
    "ia3_out_bwd_kernel": lambda a, grid: (2 * a["M"] * a["N"] * a["K"], None),
    "ia3_in_bwd_kernel": lambda a, grid: (2 * a["M"] * a["N"] * a["K"], None),
    "ia3_out_dl_kernel": lambda a, grid: (0, None),
}


def _fwd_rereads(l_along_k: bool):
    """The forwards' re-reads: one program per [BLOCK_M, BLOCK_N] tile of y walks all of K, so x
    is read once per column block, W and the bias once per row block. l scales the output's
    columns (its slice once per row block) or, `l_along_k` (the input case), x's columns along
    K (all of it in every program)."""

    def rereads(a) -> int:
        m_blocks, n_blocks = blocks(a, "M", "BLOCK_M"), blocks(a, "N", "BLOCK_N")
        extra = each_extra(a, "x_ptr", n_blocks) + each_extra(a, "w_ptr", m_blocks)
        if a["HAS_BIAS"]:
            extra += each_extra(a, "bias_ptr", m_blocks)
        return extra + each_extra(a, "l_ptr", m_blocks * n_blocks if l_along_k else m_blocks)

    return rereads


def _out_bwd_rereads(a) -> int:
    # dx's programs ([BLOCK_M, BLOCK_K] tiles walking N) read dy once per column block and all
    # of l in each; the dl programs read dy (and z) once more.
    m_blocks, k_blocks = blocks(a, "M", "BLOCK_M"), blocks(a, "K", "BLOCK_K")
    dy_reads = k_blocks + (1 if a["DL_PROGRAMS"] else 0)
    return (
        each_extra(a, "dy_ptr", dy_reads)
        + each_extra(a, "w_ptr", m_blocks)
        + each_extra(a, "l_ptr", m_blocks * k_blocks)
    )


def _in_bwd_rereads(a) -> int:
    # [BLOCK_M, BLOCK_K] tiles of g walking N: dy once per column block, W once per row block;
    # l's slice once per row block for dx, x once for dl.
    m_blocks, k_blocks = blocks(a, "M", "BLOCK_M"), blocks(a, "K", "BLOCK_K")
    extra = each_extra(a, "dy_ptr", k_blocks) + each_extra(a, "w_ptr", m_blocks)
    return extra + (each_extra(a, "l_ptr", m_blocks) if a["NEED_DX"] else 0)


# The static model's L2 traffic beyond each tensor's one DRAM read (see kernels/adapter.py's
# REREADS).
REREADS = {
    "ia3_out_fwd_kernel": _fwd_rereads(l_along_k=False),
    "ia3_in_fwd_kernel": _fwd_rereads(l_along_k=True),
    "ia3_out_bwd_kernel": _out_bwd_rereads,
    "ia3_in_bwd_kernel": _in_bwd_rereads,
    "ia3_out_dl_kernel": lambda a: 0,
}
