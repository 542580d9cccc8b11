"""Device helpers shared by the Triton kernels: tensor-core dots and counter-based dropout."""

import triton
import triton.language as tl


@triton.jit
def mma(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a @ b with an fp32 accumulator.

    UPCAST is set by the host under the Triton interpreter, whose 16-bit dot is unreliable; on a GPU
    16-bit tiles go straight to the tensor cores. PRECISION ("ieee", "tf32" or "tf32x3") only
    affects fp32 operands: the host picks it from torch's allow_tf32 setting (launch.dot_flags).
    """
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def tf32_round(v):
    """fp32 v rounded to TF32's 10 mantissa bits (to nearest, ties away from zero, as
    cvt.rna.tf32.f32 rounds), still in fp32 registers: an integer add and mask."""
    bits = v.to(tl.uint32, bitcast=True)
    return ((bits + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)


@triton.jit
def _tf32x2(exact, split, acc, EXACT_LEFT: tl.constexpr):
    # exact @ split (or split @ exact) as 3xTF32 computes it when `exact`'s low part is zero:
    # the product with `split`'s TF32 remainder first, then with its rounded high part.
    big = tf32_round(split)
    small = tf32_round(split - big)
    if EXACT_LEFT:
        acc = tl.dot(exact, small, acc, input_precision="tf32")
        acc = tl.dot(exact, big, acc, input_precision="tf32")
    else:
        acc = tl.dot(small, exact, acc, input_precision="tf32")
        acc = tl.dot(big, exact, acc, input_precision="tf32")
    return acc


@triton.jit
def mma_widened(a, b, acc, A_WIDENS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a @ b where one operand (a if A_WIDENS, else b) comes in a 16-bit dtype and the
    other in the adapter dtype, to which the 16-bit one is cast (PEFT's x cast to fp32 adapters).
    A 16-bit value is exact in TF32 (bf16's 8 and fp16's 10 mantissa bits fit TF32's 10, and
    TF32 has fp32's exponent range), so 3xTF32 needs two products instead of three and no
    split of the wide operand: the same sum, for less than half the per-element work."""
    if A_WIDENS:
        narrow, wide = a, b
    else:
        narrow, wide = b, a
    # Nested compile-time branches, one comparison each (Triton 3.6 and 3.9 alike).
    if PRECISION == "tf32x3":
        if wide.dtype == tl.float32:
            if narrow.dtype.primitive_bitwidth == 16:
                acc = _tf32x2(narrow.to(tl.float32), wide, acc, A_WIDENS)
            else:
                acc = _cast_mma(a, b, acc, A_WIDENS, UPCAST, PRECISION)
        else:
            acc = _cast_mma(a, b, acc, A_WIDENS, UPCAST, PRECISION)
    else:
        acc = _cast_mma(a, b, acc, A_WIDENS, UPCAST, PRECISION)
    return acc


@triton.jit
def _cast_mma(a, b, acc, A_WIDENS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    # The plain product, the narrow operand cast to the other's dtype first.
    if A_WIDENS:
        acc = mma(a.to(b.dtype), b, acc, UPCAST, PRECISION)
    else:
        acc = mma(a, b.to(a.dtype), acc, UPCAST, PRECISION)
    return acc


# Philox rounds per call. Random123 (Salmon et al., SC'11) finds Philox4x32 with 7 rounds
# "Crush-resistant" (it passes TestU01's BigCrush) and recommends 10 as a safety margin; dropout
# masks need far less than cryptographic or Monte Carlo-grade quality, and
# tests/kernels/test_dropout_statistics.py checks what they do need (rate, lanes, neighbours,
# independent seeds).
DROPOUT_ROUNDS = tl.constexpr(7)


@triton.jit
def _dropout_bytes(seed, offs_m, offs_k, K, p):
    """The keep decisions of the [BLOCK_M, BLOCK_K] tile at (offs_m, offs_k) as one byte per
    eight columns ([BLOCK_M, BLOCK_K / 8] int32, bit j = column 8 g + j; tiles start at a
    multiple of 8 columns: every BLOCK is).

    One Philox call per eight columns gives four 32-bit numbers; each half of each is one 16-bit
    uniform number, so a call decides eight neighbouring columns (an eighth of the calls
    `tl.rand` would make per element, and no float conversion). Bit j reads the low half of
    number j for j < 4, the high half of number j - 4 otherwise. A column is kept when its
    number is at least round(p * 2**16): with probability 1 - p to within 2**-17 (p's own
    rounding to 16 bits). The counter is (column // 8, row) in two of Philox's four 32-bit counter
    words (no flattening, so no 64-bit arithmetic however large M * K), so a decision depends
    on (seed, row, column) only, never on the tile."""
    groups = tl.min(offs_k, axis=0) // 8 + tl.arange(0, offs_k.shape[0] // 8)
    zero = tl.zeros((offs_m.shape[0], offs_k.shape[0] // 8), dtype=tl.uint32)
    c0 = zero + groups.to(tl.uint32)[None, :]
    c1 = zero + offs_m.to(tl.uint32)[:, None]
    r0, r1, r2, r3 = tl.philox(seed, c0, c1, zero, zero, DROPOUT_ROUNDS)
    # Bit j is (number_j + 2**16 - T) >> 16 for a 16-bit number and T = round(p * 2**16): 1
    # exactly when number_j >= T, in integer adds and shifts (no predicates to move around).
    bias = 65536 - tl.cast(p * 65536.0 + 0.5, tl.uint32)
    low = 0xFFFF
    bits = (((r0 & low) + bias) >> 16) | ((((r1 & low) + bias) >> 15) & 2)
    bits |= ((((r2 & low) + bias) >> 14) & 4) | ((((r3 & low) + bias) >> 13) & 8)
    bits |= ((((r0 >> 16) + bias) >> 12) & 16) | ((((r1 >> 16) + bias) >> 11) & 32)
    bits |= ((((r2 >> 16) + bias) >> 10) & 64) | ((((r3 >> 16) + bias) >> 9) & 128)
    return bits.to(tl.int32)


@triton.jit
def _bytes_to_tile(bits, BLOCK_K: tl.constexpr):
    """The [BLOCK_M, BLOCK_K] keep-mask of [BLOCK_M, BLOCK_K / 8] bytes: each byte broadcast over
    its eight columns and tested ([BLOCK_M, G, 8] -> [BLOCK_M, 8 G], column 8 g + j = bit j)."""
    selected = bits[:, :, None] & (1 << tl.arange(0, 8))[None, None, :]  # one AND an element
    return tl.reshape(selected, (bits.shape[0], BLOCK_K)) != 0


@triton.jit
def dropout_keep(seed, offs_m, offs_k, K, p):
    """Keep-mask of inverted dropout for the [BLOCK_M, BLOCK_K] tile at (offs_m, offs_k). The
    backward pass gets exactly the forward's mask: drawn again from the same seed, or read from
    the bytes `dropout_keep_bits` stored."""
    return _bytes_to_tile(_dropout_bytes(seed, offs_m, offs_k, K, p), offs_k.shape[0])


@triton.jit
def dropout_keep_bits(seed, offs_m, offs_k, K, p):
    """(keep-mask, its bytes) for the tile: the mask as `dropout_keep` draws it, and the same
    decisions one byte per eight columns ([BLOCK_M, BLOCK_K / 8] uint8, bit j = column 8 g + j)
    for the forward to store."""
    bits = _dropout_bytes(seed, offs_m, offs_k, K, p)
    # The tile comes from its own (identical) draw: the compiler shares the Philox rounds and
    # tests each number where the tile needs it, instead of unpacking `bits` (3 more an element).
    return dropout_keep(seed, offs_m, offs_k, K, p), bits.to(tl.uint8)


@triton.jit
def draw_keep(
    seed, bits_ptr, offs_m, offs_k, k0, K, p, stride_bits, store_rows,
    STORE_BITS: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """The keep-mask of the tile at (offs_m, offs_k = k0 + arange(BLOCK_K)) drawn from `seed`;
    with STORE_BITS its bytes also go to bits_ptr ([rows, ceil(K / 8)] uint8, row stride
    `stride_bits`) for the rows below `store_rows`, for the backward to read (`load_keep`)."""
    if STORE_BITS:
        keep, bits = dropout_keep_bits(seed, offs_m, offs_k, K, p)
        offs_b = k0 // 8 + tl.arange(0, BLOCK_K // 8)
        store_tile(bits_ptr, bits, offs_m, offs_b, stride_bits, 1, store_rows, tl.cdiv(K, 8))
    else:
        keep = dropout_keep(seed, offs_m, offs_k, K, p)
    return keep


@triton.jit
def load_keep(bits_ptr, offs_m, offs_k, stride_bm, M, K):
    """The keep-mask of the tile at (offs_m, offs_k) from the bytes `dropout_keep_bits` stored
    ([M, ceil(K / 8)] uint8, row stride `stride_bm`)."""
    offs_b = tl.min(offs_k, axis=0) // 8 + tl.arange(0, offs_k.shape[0] // 8)
    bits = load_tile(bits_ptr, offs_m, offs_b, stride_bm, 1, M, (K + 7) // 8).to(tl.int32)
    return _bytes_to_tile(bits, offs_k.shape[0])


@triton.jit
def accumulate_x_wt(
    acc, x_ptr, w_ptr, offs_m, offs_n, M, N, K, stride_xm, stride_xk, stride_wn, stride_wk,
    BLOCK_K: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """acc + x Wᵀ for the [len(offs_m), len(offs_n)] output tile, stepping BLOCK_K along K: the
    frozen base GEMM of a linear layer (x [M, K], W [N, K])."""
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = load_tile(x_ptr, offs_m, offs_k, stride_xm, stride_xk, M, K)
        w_t = load_tile(w_ptr, offs_k, offs_n, stride_wk, stride_wn, K, N)
        acc = mma(x, w_t, acc, UPCAST, PRECISION)
    return acc


@triton.jit
def load_tile(ptr, rows, cols, stride_row, stride_col, n_rows, n_cols):
    """The [len(rows), len(cols)] tile at (rows, cols) of a strided 2-D tensor; 0 outside it."""
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    return tl.load(
        ptr + rows[:, None] * stride_row + cols[None, :] * stride_col, mask=mask, other=0.0
    )


@triton.jit
def store_tile(ptr, value, rows, cols, stride_row, stride_col, n_rows, n_cols):
    """Store `value` (cast to the tensor's dtype) at (rows, cols), masking the tails."""
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    offsets = rows[:, None] * stride_row + cols[None, :] * stride_col
    tl.store(ptr + offsets, value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def grouped_tile(pid, num_m, num_n, GROUP_M: tl.constexpr):
    # Walk GROUP_M row-tiles down a column of tiles before moving right, so the W tiles a group
    # shares stay in L2 (the usual grouped GEMM ordering).
    per_group = GROUP_M * num_n
    group = pid // per_group
    first_m = group * GROUP_M
    rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % rows
    pid_n = (pid % per_group) // rows
    return pid_m, pid_n
