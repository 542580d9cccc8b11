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


@triton.jit
def dropout_keep(seed, offs_m, offs_k, K, p):
    """Keep-mask of inverted dropout for the [BLOCK_M, BLOCK_K] tile at (offs_m, offs_k).

    The Philox counter is the element's flat index m*K + k (int64: M*K can pass 2**31), so the
    backward pass regenerates exactly the forward's mask from the same seed and nothing is stored.
    An element is kept with probability 1 - p, as in nn.Dropout.
    """
    offsets = offs_m.to(tl.int64)[:, None] * K + offs_k.to(tl.int64)[None, :]
    return tl.rand(seed, offsets) >= p


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
