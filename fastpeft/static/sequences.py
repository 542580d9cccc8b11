"""Launch sequences the static model compares fused launches with: the frozen base linear as
cuBLAS runs it, and PEFT's (or the eager module's) own kernels, one `Op` per kernel, each with its
FLOPs, minimum DRAM bytes and the ceiling its products run at. The case modules of
fastpeft/bench/cases/ compose these for their method."""

import math
from dataclasses import dataclass

import torch

from . import model

# cuBLAS and PyTorch's elementwise kernels run at the arch's ceilings in the model (the measured
# matmul ceiling is itself cuBLAS's). fp32 matmuls run on FMA units: torch's default
# allow_tf32=False for matmul, PEFT's fp32 adapters included.
RATE_OF_DTYPE = {torch.bfloat16: "tc16", torch.float16: "tc16", torch.float32: "fp32"}


@dataclass(frozen=True)
class Op:
    name: str
    flops: float
    dram_bytes: float
    rate: str  # "tc16", "tf32", "fp32" or "none"
    output: tuple[int, int] = (0, 0)  # a GEMM's [M, N], for its last-wave quantisation
    l2_bytes: float = 0.0  # bytes between L2 and the SMs, where more than its DRAM bytes

    @property
    def l2(self) -> float:
        """The bytes it moves between L2 and the SMs (at least its DRAM bytes)."""
        return max(self.l2_bytes, self.dram_bytes)

    def predicted_us(self, arch) -> float:
        """cuBLAS and PyTorch's kernels at the arch's peaks; a large GEMM quantised as
        model.gemm_utilisation assumes."""
        busy = model.gemm_utilisation(arch, *self.output) if self.output[0] else 1.0
        work = {self.rate: self.flops}
        return model.predict(arch, work, self.dram_bytes, busy, self.l2).predicted_us


def gemm(name: str, M: int, N: int, K: int, a_dtype, out_dtype=None, rate=None) -> Op:
    """[M, K] x [K, N] -> [M, N], each operand read once and the result written once, at the
    dtype's ceiling unless `rate` says otherwise (fp32 under allow_tf32: "tf32")."""
    size = a_dtype.itemsize
    out = (out_dtype or a_dtype).itemsize
    moved = size * (M * K + K * N) + out * M * N
    rate = rate or RATE_OF_DTYPE[a_dtype]
    return Op(name, 2 * M * N * K, moved, rate, (M, N), moved + gemm_rereads(M, N, K, size))


def gemm_rereads(M: int, N: int, K: int, size: int) -> int:
    """The operand bytes a GEMM reads again from L2, as the model assumes cuBLAS walks it: one
    CTA per model.CUBLAS_TILE output tile, each reading its rows of the left operand and its
    columns of the right one whole, so the left is read once per column of tiles and the right
    once per row of tiles. No cluster multicast (which would share one operand's tiles between
    a cluster's CTAs): as the Triton kernels' walks (kernels/*.py REREADS), and an upper bound
    if cuBLAS multicasts. Under a wave cuBLAS picks other tiles or splits K; this walk stays."""
    tile_m, tile_n = model.CUBLAS_TILE
    left = M * K * size * (math.ceil(N / tile_n) - 1)
    return left + K * N * size * (math.ceil(M / tile_m) - 1)


def elementwise(name: str, read: float, written: float) -> Op:
    """A memory-bound kernel reading and writing these many bytes."""
    return Op(name, 0, read + written, "none")


def base_linear(M: int, K: int, N: int, dtype) -> tuple[list[Op], list[Op]]:
    """(forward, backward) of the frozen base linear: y = x Wᵀ; dx = dy W (no dW: frozen)."""
    return [gemm("base x·Wᵀ", M, N, K, dtype)], [gemm("base dy·W", M, K, N, dtype)]


def dropout_with_copy(M: int, K: int, dtype, adapter_dtype) -> list[Op]:
    """nn.Dropout on x then the cast to the adapter dtype: a bool mask and a dropped copy are
    written (and kept for the backward), then the cast copy."""
    n, size = M * K, dtype.itemsize
    ops = [elementwise("dropout mask + dropped copy", n * size, n * (1 + size))]
    if adapter_dtype != dtype:
        ops.append(elementwise("cast to adapter dtype", n * size, n * adapter_dtype.itemsize))
    return ops


def dropout_backward(M: int, K: int, dtype) -> list[Op]:
    n, size = M * K, dtype.itemsize
    return [elementwise("dropout backward (grad ⊙ mask)", n * (size + 1), n * size)]
