"""Fused bottleneck adapters: out = residual + s · act(drop(z) W_downᵀ) W_upᵀ.

Shapes: z [M, D], W_down [H, D], W_up [D, H], pre = drop(z) W_downᵀ [M, H] (the only tensor kept
for the backward), g = s · (dy W_up) ⊙ act'(pre) [M, H]. The bottleneck runs in the adapter dtype
(z is cast to it, as PEFT does for fp32 adapters); every product accumulates in fp32. A pair is two
adapters on one input (LLaVA's gate/up pre-adapters), each with its own dropout mask drawn from
seed[0] and seed[1]. Six kernels:

    adapter_down_kernel     pre = drop(z) W_downᵀ, a = act(pre)  one z tile feeds both of a pair;
                                                                 stores the masks' bits
    adapter_up_kernel       out = residual + s · a W_upᵀ         a from the down kernel
    adapter_dpre_kernel     g = s · (dy W_up) ⊙ act'(pre), a = act(pre)      one pass over dy
    adapter_dw_up_kernel    dW_up = s · dyᵀ a                    M split into fixed-order partials
    adapter_dw_down_kernel  dW_down = gᵀ drop(z)                 the forward's mask (its bits)
    adapter_dz_kernel       dz = drop'(g W_down) (+ dy, + dy2)   the residual's grad in the epilogue
"""

import triton
import triton.language as tl

from ._common import (
    draw_keep,
    dropout_keep,
    grouped_tile,
    load_keep,
    load_tile,
    mma,
    mma_widened,
    store_tile,
)
from ._rereads import blocks, nbytes

# NOTE: globals must be tl.constexpr instances: the GPU compiler rejects a `: tl.constexpr`
# annotation that the interpreter accepts (triton 3.9, caught by an sm_90 compile without a GPU).
# Taylor coefficients of tanh (x³ ... x¹¹): -1/3, 2/15, -17/315, 62/2835, -1382/155925.
_T3 = tl.constexpr(-0.3333333333333333)
_T5 = tl.constexpr(0.13333333333333333)
_T7 = tl.constexpr(-0.05396825396825397)
_T9 = tl.constexpr(0.021869488536155203)
_T11 = tl.constexpr(-0.008863235529902197)
_SQRT1_2 = tl.constexpr(0.7071067811865476)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _tanh(x):
    # tl has no tanh that the interpreter runs (libdevice is GPU-only), and one formula everywhere
    # keeps the GPU kernels what the CPU tier tests. Below |x| = 0.4 the odd Taylor series (next
    # term < 1e-7 relative) avoids the cancellation of 1 - exp(-2|x|); above it the exp form is
    # within a few ulp. exp(-2|x|) never overflows.
    x2 = x * x
    series = x * (1.0 + x2 * (_T3 + x2 * (_T5 + x2 * (_T7 + x2 * (_T9 + x2 * _T11)))))
    e = tl.exp(-2.0 * tl.abs(x))
    tail = (1.0 - e) / (1.0 + e)
    tail = tl.where(x < 0, -tail, tail)
    return tl.where(tl.abs(x) < 0.4, series, tail)


@triton.jit
def activation(x, ACTIVATION: tl.constexpr):
    """act(x) elementwise on an fp32 tile; act(0) = 0 for every choice, so masked tails stay 0."""
    if ACTIVATION == "tanh":
        y = _tanh(x)
    elif ACTIVATION == "relu":
        y = tl.maximum(x, 0.0)
    elif ACTIVATION == "gelu":  # exact erf form, F.gelu's default
        y = x * 0.5 * (1.0 + tl.erf(x * _SQRT1_2))
    else:
        tl.static_assert(ACTIVATION == "silu")
        y = x * tl.sigmoid(x)
    return y


@triton.jit
def activation_grad(x, ACTIVATION: tl.constexpr):
    """act'(x) elementwise on an fp32 tile (relu' is 0 at 0, as torch's threshold_backward)."""
    if ACTIVATION == "tanh":
        t = _tanh(x)
        y = 1.0 - t * t
    elif ACTIVATION == "relu":
        y = tl.where(x > 0, 1.0, 0.0)
    elif ACTIVATION == "gelu":
        cdf = 0.5 * (1.0 + tl.erf(x * _SQRT1_2))
        y = cdf + x * _INV_SQRT_2PI * tl.exp(-0.5 * x * x)
    else:
        tl.static_assert(ACTIVATION == "silu")
        s = tl.sigmoid(x)
        y = s * (1.0 + x * (1.0 - s))
    return y


@triton.jit
def _drop(x, keep):
    # keep ⊙ x, in x's dtype: one select an element. The 1 / (1 - p) of inverted dropout is
    # linear, so the kernels multiply it into their fp32 accumulators once (`_unscale`) instead
    # of into every element (a convert, a multiply and a round back each, for 16-bit tiles).
    return tl.where(keep, x, 0.0).to(x.dtype)


@triton.jit
def _unscale(acc, p, HAS_DROPOUT: tl.constexpr):
    # An accumulator of products with keep ⊙ x, times inverted dropout's 1 / (1 - p).
    if HAS_DROPOUT:
        acc = acc * (1.0 / (1.0 - p))
    return acc


@triton.jit
def _keep(seed, bits_ptr, offs_m, offs_k, M, K, stride_bm, p, FROM_BITS: tl.constexpr):
    # The forward's keep-mask for a tile: read from the bits it stored, or drawn again.
    if FROM_BITS:
        keep = load_keep(bits_ptr, offs_m, offs_k, stride_bm, M, K)
    else:
        keep = dropout_keep(seed, offs_m, offs_k, K, p)
    return keep


@triton.jit
def _drop_and_store(
    z, seed, bits_ptr, offs_m, offs_d, d0, M, D, p, stride_bm, store_rows,
    HAS_DROPOUT: tl.constexpr, STORE_BITS: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    # drop(z) for one adapter of adapter_down_kernel; with STORE_BITS its keep decisions also go
    # to bits_ptr (1 bit per element), for the first `store_rows` rows (0 in the programs whose
    # H block is not the first: one program per row block writes them).
    y = z
    if HAS_DROPOUT:
        keep = draw_keep(seed, bits_ptr, offs_m, offs_d, d0, D, p, stride_bm, store_rows,
                         STORE_BITS, BLOCK_D)  # fmt: skip
        y = _drop(z, keep)
    return y


@triton.jit
def _seeds(seed_ptr, PAIR: tl.constexpr, HAS_DROPOUT: tl.constexpr):
    seed1 = 0
    seed2 = 0
    if HAS_DROPOUT:
        seed1 = tl.load(seed_ptr)
        if PAIR:
            seed2 = tl.load(seed_ptr + 1)
    return seed1, seed2


@triton.jit
def adapter_down_kernel(
    z_ptr, wd_ptr, wd2_ptr, pre_ptr, pre2_ptr, a_ptr, a2_ptr, seed_ptr, bits_ptr,
    M, D, H, p,
    stride_zm, stride_zd, stride_wh, stride_wd, stride_pm, stride_ph, stride_bg, stride_bm,
    ACTIVATION: tl.constexpr, PAIR: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    STORE_BITS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    # Grid: one program per (row block, H block), H blocks adjacent so that a row block's z tiles
    # come from L2 after the first read. Each z tile loaded feeds one fp32 accumulator, or two for
    # a pair (each through its own mask); the two weights share strides, as do the two pres.
    # With STORE_BITS the masks also go to bits_ptr ([count, M, ceil(D / 8)] uint8, adapter g's
    # at g * stride_bg) for the backward kernels to read instead of drawing them again. The
    # epilogue writes pre (kept for the backward) and a = act(pre) (for the up kernel, in pre's
    # strides): act runs once per element of pre, here, not once per output column block there.
    num_h = tl.cdiv(H, BLOCK_H)
    pid_m, pid_h = tl.program_id(0) // num_h, tl.program_id(0) % num_h
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # M·D > 2**31
    offs_h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    seed1, seed2 = _seeds(seed_ptr, PAIR, HAS_DROPOUT)
    store_rows = tl.where(pid_h == 0, M, 0)
    acc1 = tl.zeros((BLOCK_M, BLOCK_H), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_M, BLOCK_H), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        z = load_tile(z_ptr, offs_m, offs_d, stride_zm, stride_zd, M, D)
        w_t = load_tile(wd_ptr, offs_d, offs_h, stride_wd, stride_wh, D, H)
        z1 = _drop_and_store(z, seed1, bits_ptr, offs_m, offs_d, d0, M, D, p, stride_bm,
                             store_rows, HAS_DROPOUT, STORE_BITS, BLOCK_D)  # fmt: skip
        acc1 = mma_widened(z1, w_t, acc1, True, UPCAST, PRECISION)
        if PAIR:
            w2_t = load_tile(wd2_ptr, offs_d, offs_h, stride_wd, stride_wh, D, H)
            bits2_ptr = bits_ptr + stride_bg
            z2 = _drop_and_store(z, seed2, bits2_ptr, offs_m, offs_d, d0, M, D, p, stride_bm,
                                 store_rows, HAS_DROPOUT, STORE_BITS, BLOCK_D)  # fmt: skip
            acc2 = mma_widened(z2, w2_t, acc2, True, UPCAST, PRECISION)
    acc1 = _unscale(acc1, p, HAS_DROPOUT)
    acc2 = _unscale(acc2, p, HAS_DROPOUT)
    _store_pre_and_act(acc1, pre_ptr, a_ptr, offs_m, offs_h, stride_pm, stride_ph, M, H,
                       ACTIVATION)  # fmt: skip
    if PAIR:
        _store_pre_and_act(acc2, pre2_ptr, a2_ptr, offs_m, offs_h, stride_pm, stride_ph, M, H,
                           ACTIVATION)  # fmt: skip


@triton.jit
def _store_pre_and_act(acc, pre_ptr, a_ptr, offs_m, offs_h, stride_pm, stride_ph, M, H,
                       ACTIVATION: tl.constexpr):  # fmt: skip
    # pre rounded to the adapter dtype, and act of that rounded value (the reference rounds pre
    # before act, and act(pre) again to the adapter dtype).
    pre = acc.to(pre_ptr.dtype.element_ty)
    store_tile(pre_ptr, pre, offs_m, offs_h, stride_pm, stride_ph, M, H)
    a = activation(pre.to(tl.float32), ACTIVATION)
    store_tile(a_ptr, a, offs_m, offs_h, stride_pm, stride_ph, M, H)


@triton.jit
def adapter_up_kernel(
    a_ptr, wu_ptr, res_ptr, out_ptr,
    M, D, H, scaling,
    stride_am, stride_ah, stride_wd, stride_wh, stride_rm, stride_rd, stride_om, stride_od,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grid: one program per [BLOCK_M, BLOCK_D] tile of out (grouped order). a = act(pre) comes
    # from the down kernel's epilogue in the adapter dtype; the residual is added to the fp32
    # accumulator and the sum rounded once to out's dtype.
    pid_m, pid_d = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(D, BLOCK_D), GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        a = load_tile(a_ptr, offs_m, offs_h, stride_am, stride_ah, M, H)
        w_t = load_tile(wu_ptr, offs_h, offs_d, stride_wh, stride_wd, H, D)
        acc = mma(a, w_t, acc, UPCAST, PRECISION)
    res = load_tile(res_ptr, offs_m, offs_d, stride_rm, stride_rd, M, D).to(tl.float32)
    store_tile(out_ptr, res + scaling * acc, offs_m, offs_d, stride_om, stride_od, M, D)


@triton.jit
def adapter_dpre_kernel(
    dy_ptr, wu_ptr, pre_ptr, g_ptr, a_ptr,
    M, D, H, scaling,
    stride_dym, stride_dyd, stride_wd, stride_wh, stride_pm, stride_ph, stride_gm, stride_gh,
    ACTIVATION: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    # Grid: one program per (row block, H block), H blocks adjacent (dy tiles shared through L2).
    # dy W_up accumulates over D in fp32; the epilogue reads the pre tile once for both
    # g = s · (dy W_up) ⊙ act'(pre) and a = act(pre) (g and a share strides), so dW_up is a plain
    # GEMM and no kernel re-evaluates act per output column block.
    num_h = tl.cdiv(H, BLOCK_H)
    pid_m, pid_h = tl.program_id(0) // num_h, tl.program_id(0) % num_h
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    acc = tl.zeros((BLOCK_M, BLOCK_H), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dy = load_tile(dy_ptr, offs_m, offs_d, stride_dym, stride_dyd, M, D)
        w = load_tile(wu_ptr, offs_d, offs_h, stride_wd, stride_wh, D, H)
        acc = mma_widened(dy, w, acc, True, UPCAST, PRECISION)
    pre = load_tile(pre_ptr, offs_m, offs_h, stride_pm, stride_ph, M, H).to(tl.float32)
    g = scaling * acc * activation_grad(pre, ACTIVATION)
    store_tile(g_ptr, g, offs_m, offs_h, stride_gm, stride_gh, M, H)
    store_tile(a_ptr, activation(pre, ACTIVATION), offs_m, offs_h, stride_gm, stride_gh, M, H)


@triton.jit
def adapter_dw_up_kernel(
    dy_ptr, a_ptr, dwu_ptr,
    M, D, H, scaling, ROWS_PER_SPLIT,
    stride_dym, stride_dyd, stride_am, stride_ah, stride_ws, stride_wd, stride_wh,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    # Grid: (D blocks, H blocks, M splits) of dW_up; each program walks its split's
    # ROWS_PER_SPLIT rows (a multiple of BLOCK_M) in order and writes its own slot of the fp32
    # partials (at split * stride_ws; the host sums them in split order, or with one split the
    # program writes dW_up itself): deterministic, no atomics.
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    split = tl.program_id(2)
    acc = tl.zeros((BLOCK_D, BLOCK_H), dtype=tl.float32)
    m_start = split * ROWS_PER_SPLIT
    for m0 in range(m_start, tl.minimum(M, m_start + ROWS_PER_SPLIT), BLOCK_M):
        offs_m = (m0 + tl.arange(0, BLOCK_M)).to(tl.int64)
        dy_t = load_tile(dy_ptr, offs_d, offs_m, stride_dyd, stride_dym, D, M)
        a = load_tile(a_ptr, offs_m, offs_h, stride_am, stride_ah, M, H)
        acc = mma_widened(dy_t, a, acc, True, UPCAST, PRECISION)
    out_ptr = dwu_ptr + split.to(tl.int64) * stride_ws
    store_tile(out_ptr, scaling * acc, offs_d, offs_h, stride_wd, stride_wh, D, H)


@triton.jit
def adapter_dw_down_kernel(
    z_ptr, g_ptr, g2_ptr, seed_ptr, bits_ptr, dwd_ptr, dwd2_ptr,
    M, D, H, p, ROWS_PER_SPLIT,
    stride_zm, stride_zd, stride_gm, stride_gh, stride_ws, stride_wh, stride_wd, stride_bg,
    stride_bm,
    PAIR: tl.constexpr, HAS_DROPOUT: tl.constexpr, FROM_BITS: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    # Grid: (H blocks, D blocks, M splits) of dW_down, each split's rows walked in order into its
    # own partial slot (as adapter_dw_up_kernel: deterministic). The dropout masks are the
    # forward's: read from its bits (FROM_BITS) or drawn again from its seeds; a pair reads each
    # z tile once for both gradients.
    offs_h = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    split = tl.program_id(2)
    seed1, seed2 = _seeds(seed_ptr, PAIR, HAS_DROPOUT)
    acc1 = tl.zeros((BLOCK_H, BLOCK_D), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_H, BLOCK_D), dtype=tl.float32)
    m_start = split * ROWS_PER_SPLIT
    for m0 in range(m_start, tl.minimum(M, m_start + ROWS_PER_SPLIT), BLOCK_M):
        offs_m = (m0 + tl.arange(0, BLOCK_M)).to(tl.int64)
        z = load_tile(z_ptr, offs_m, offs_d, stride_zm, stride_zd, M, D)
        g_t = load_tile(g_ptr, offs_h, offs_m, stride_gh, stride_gm, H, M)
        z1 = z
        if HAS_DROPOUT:
            keep = _keep(seed1, bits_ptr, offs_m, offs_d, M, D, stride_bm, p, FROM_BITS)
            z1 = _drop(z, keep)
        acc1 = mma_widened(g_t, z1, acc1, False, UPCAST, PRECISION)
        if PAIR:
            g2_t = load_tile(g2_ptr, offs_h, offs_m, stride_gh, stride_gm, H, M)
            z2 = z
            if HAS_DROPOUT:
                keep2 = _keep(seed2, bits_ptr + stride_bg, offs_m, offs_d, M, D, stride_bm, p,
                              FROM_BITS)  # fmt: skip
                z2 = _drop(z, keep2)
            acc2 = mma_widened(g2_t, z2, acc2, False, UPCAST, PRECISION)
    acc1 = _unscale(acc1, p, HAS_DROPOUT)
    acc2 = _unscale(acc2, p, HAS_DROPOUT)
    slot = split.to(tl.int64) * stride_ws
    store_tile(dwd_ptr + slot, acc1, offs_h, offs_d, stride_wh, stride_wd, H, D)
    if PAIR:
        store_tile(dwd2_ptr + slot, acc2, offs_h, offs_d, stride_wh, stride_wd, H, D)


@triton.jit
def adapter_dz_kernel(
    g_ptr, g2_ptr, wd_ptr, wd2_ptr, dy_ptr, dy2_ptr, seed_ptr, bits_ptr, dz_ptr,
    M, D, H, p,
    stride_gm, stride_gh, stride_wh, stride_wd, stride_dym, stride_dyd, stride_dy2m, stride_dy2d,
    stride_dzm, stride_dzd, stride_bg, stride_bm,
    PAIR: tl.constexpr, NUM_DY: tl.constexpr, HAS_DROPOUT: tl.constexpr, FROM_BITS: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grid: one program per [BLOCK_M, BLOCK_D] tile of dz (grouped order), K = H (2H for a pair).
    # Without dropout a pair's two products share one accumulator; with it each needs its own
    # mask, so a second accumulator. The residual grads (dy when the residual is z; du + dv for a
    # pair) are added in the epilogue and the sum is rounded once to z's dtype.
    pid_m, pid_d = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(D, BLOCK_D), GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    seed1, seed2 = _seeds(seed_ptr, PAIR, HAS_DROPOUT)
    acc1 = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        g = load_tile(g_ptr, offs_m, offs_h, stride_gm, stride_gh, M, H)
        w = load_tile(wd_ptr, offs_h, offs_d, stride_wh, stride_wd, H, D)
        acc1 = mma(g, w, acc1, UPCAST, PRECISION)
        if PAIR:
            g2 = load_tile(g2_ptr, offs_m, offs_h, stride_gm, stride_gh, M, H)
            w2 = load_tile(wd2_ptr, offs_h, offs_d, stride_wh, stride_wd, H, D)
            if HAS_DROPOUT:
                acc2 = mma(g2, w2, acc2, UPCAST, PRECISION)
            else:
                acc1 = mma(g2, w2, acc1, UPCAST, PRECISION)
    if HAS_DROPOUT:  # the forward's masks (its bits, or drawn again), in the accumulator layout
        keep_scale = 1.0 / (1.0 - p)
        keep = _keep(seed1, bits_ptr, offs_m, offs_d, M, D, stride_bm, p, FROM_BITS)
        acc1 = tl.where(keep, acc1 * keep_scale, 0.0)
        if PAIR:
            keep2 = _keep(seed2, bits_ptr + stride_bg, offs_m, offs_d, M, D, stride_bm, p,
                          FROM_BITS)  # fmt: skip
            acc1 += tl.where(keep2, acc2 * keep_scale, 0.0)
    if NUM_DY >= 1:
        acc1 += load_tile(dy_ptr, offs_m, offs_d, stride_dym, stride_dyd, M, D).to(tl.float32)
    if NUM_DY == 2:
        acc1 += load_tile(dy2_ptr, offs_m, offs_d, stride_dy2m, stride_dy2d, M, D).to(tl.float32)
    store_tile(dz_ptr, acc1, offs_m, offs_d, stride_dzm, stride_dzd, M, D)


@triton.jit
def adapter_activation_kernel(
    x_ptr, y_ptr, dydx_ptr, N,
    ACTIVATION: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # act(x) and act'(x) of a flat fp32 tensor, to check the device formulas against torch at the
    # ulp level (tests only; GEMM-level tests cannot see a few-ulp error in a tanh coefficient).
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < N, other=0.0)
    tl.store(y_ptr + offs, activation(x, ACTIVATION), mask=offs < N)
    tl.store(dydx_ptr + offs, activation_grad(x, ACTIVATION), mask=offs < N)


def _bottleneck_flops(a, pair_factor: bool = True) -> int:
    # One [M, D] x [D, H] product, twice for a pair's two adapters.
    return 2 * a["M"] * a["D"] * a["H"] * (2 if pair_factor and a.get("PAIR") else 1)


# The static model's analytic cost of each launch (see kernels/lora.py's COSTS).
COSTS = {
    "adapter_down_kernel": lambda a, grid: (_bottleneck_flops(a), None),
    "adapter_up_kernel": lambda a, grid: (_bottleneck_flops(a, False), None),
    "adapter_dpre_kernel": lambda a, grid: (_bottleneck_flops(a, False), None),
    "adapter_dw_up_kernel": lambda a, grid: (_bottleneck_flops(a, False), None),
    "adapter_dw_down_kernel": lambda a, grid: (_bottleneck_flops(a), None),
    "adapter_dz_kernel": lambda a, grid: (_bottleneck_flops(a), None),
    "adapter_activation_kernel": lambda a, grid: (0, None),
}


def _walks_per_h_block(a) -> int:
    # Every H block's programs walk all of z ([M, D]): the down kernel's K loop, dW_down's M loop.
    return a["M"] * a["D"] * triton.cdiv(a["H"], a["BLOCK_H"])


# The input positions a launch walks where its programs re-walk them (the static model's
# instruction issue; see fastpeft/static/costing.py's step_elements): dropout is drawn (or its
# bits read) once per walk.
WALKS = {
    "adapter_down_kernel": _walks_per_h_block,
    "adapter_dw_down_kernel": _walks_per_h_block,
}


def _members(a) -> int:
    return 2 if a.get("PAIR") else 1


# The static model's L2 traffic beyond each tensor's one DRAM read: a program walks its whole
# reduction, so an operand tile is loaded once per output block along the other dimension (z
# once per H block in the down kernel, W_down once per row block, ...). Reported beside the
# prediction (fastpeft/static/costing.py: l2_bytes), which takes it as free until a GPU run has
# measured the L2's read bandwidth.
REREADS = {
    "adapter_down_kernel": lambda a: (
        nbytes(a["z_ptr"]) * (blocks(a, "H", "BLOCK_H") - 1)
        + _members(a) * nbytes(a["wd_ptr"]) * (blocks(a, "M", "BLOCK_M") - 1)
    ),
    "adapter_up_kernel": lambda a: (
        nbytes(a["a_ptr"]) * (blocks(a, "D", "BLOCK_D") - 1)
        + nbytes(a["wu_ptr"]) * (blocks(a, "M", "BLOCK_M") - 1)
    ),
    "adapter_dpre_kernel": lambda a: (
        nbytes(a["dy_ptr"]) * (blocks(a, "H", "BLOCK_H") - 1)
        + nbytes(a["wu_ptr"]) * (blocks(a, "M", "BLOCK_M") - 1)
    ),
    "adapter_dw_up_kernel": lambda a: (
        nbytes(a["dy_ptr"]) * (blocks(a, "H", "BLOCK_H") - 1)
        + nbytes(a["a_ptr"]) * (blocks(a, "D", "BLOCK_D") - 1)
    ),
    "adapter_dw_down_kernel": lambda a: (
        nbytes(a["z_ptr"]) * (blocks(a, "H", "BLOCK_H") - 1)
        + _members(a) * nbytes(a["g_ptr"]) * (blocks(a, "D", "BLOCK_D") - 1)
        + (nbytes(a["bits_ptr"]) * (blocks(a, "H", "BLOCK_H") - 1) if a["FROM_BITS"] else 0)
    ),
    "adapter_dz_kernel": lambda a: (
        _members(a)
        * (
            nbytes(a["g_ptr"]) * (blocks(a, "D", "BLOCK_D") - 1)
            + nbytes(a["wd_ptr"]) * (blocks(a, "M", "BLOCK_M") - 1)
        )
    ),
    "adapter_activation_kernel": lambda a: 0,
}
