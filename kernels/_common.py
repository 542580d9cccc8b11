"""Device helpers shared by the Triton kernels: tensor-core dots and counter-based dropout."""

import triton
import triton.language as tl


@triton.jit
def mma(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a @ b with an fp32 accumulator.

    UPCAST is set by the host under the Triton interpreter, whose 16-bit dot is unreliable; on a GPU
    16-bit tiles go straight to the tensor cores. PRECISION ("ieee" or "tf32") only affects fp32
    operands and follows torch's allow_tf32 setting, so fp32 results match torch.
    """
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


# Philox rounds per call. Random123 (Salmon et al., SC'11) finds Philox4x32 with 7 rounds
# "Crush-resistant" (it passes TestU01's BigCrush) and recommends 10 as a safety margin; dropout
# masks need far less than cryptographic or Monte Carlo-grade quality, and
# tests/kernels/test_dropout_statistics.py checks what they do need (rate, lanes, neighbours,
# independent seeds).
DROPOUT_ROUNDS = tl.constexpr(7)


@triton.jit
def dropout_keep(seed, offs_m, offs_k, K, p):
    """Keep-mask of inverted dropout for the [BLOCK_M, BLOCK_K] tile at (offs_m, offs_k).

    One Philox call gives four 32-bit numbers: each goes to one of four neighbouring columns,
    so a tile costs a quarter of the calls `tl.rand` would make (and no float conversion). The
    counter is (row, column // 4) flattened with int64 (M * K can pass 2**31): the backward pass
    regenerates exactly the forward's mask from the same seed and nothing is stored. Tiles start
    at a multiple of 4 columns (every BLOCK is). An element is kept when its number is at least
    p * 2**32: with probability 1 - p, as in nn.Dropout.
    """
    groups = tl.min(offs_k, axis=0) // 4 + tl.arange(0, offs_k.shape[0] // 4)
    counters = offs_m.to(tl.int64)[:, None] * ((K + 3) // 4) + groups.to(tl.int64)[None, :]
    r0, r1, r2, r3 = tl.randint4x(seed, counters, DROPOUT_ROUNDS)
    r = tl.reshape(tl.join(tl.join(r0, r1), tl.join(r2, r3)), (offs_m.shape[0], offs_k.shape[0]))
    return r >= tl.cast(p * 4294967296.0, tl.uint32)


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
