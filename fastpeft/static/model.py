"""The static model's arithmetic: occupancy and waves from a compile's resources, and a roofline
time per launch that accounts for waves and for tensor cores vs FMA units. A prediction, never a
measurement: everything it produces is labelled "model".
"""

import math
from dataclasses import dataclass

from ..triton_path import waves as waves_mod
from .archs import Arch


def ctas_per_sm(arch: Arch, registers: int, shared_bytes: int, num_warps: int) -> int:
    """Resident CTAs per SM, limited by threads, registers (allocated per warp in units of 256)
    and shared memory (plus the system's 1 KiB per CTA): the count the host code's split choice
    makes from a GPU's compile (fastpeft/triton_path/waves.py), with `arch`'s resources."""
    return waves_mod.resident(
        registers,
        shared_bytes,
        num_warps,
        shared_per_sm=arch.shared_per_sm,
        registers_per_sm=arch.registers_per_sm,
        threads_per_sm=arch.max_threads_per_sm,
        max_ctas=arch.max_ctas_per_sm,
    )


def waves(arch: Arch, ctas: int, per_sm: int) -> float:
    """How many times the grid fills every SM's resident slots (below 1: part of the GPU idles)."""
    return ctas / max(arch.sms * per_sm, 1)


def utilisation(arch: Arch, ctas: int, per_sm: int) -> float:
    """The share of the GPU the grid keeps busy on average: SMs used when it is under a wave, else
    the last wave's quantisation (3.2 waves run as 4)."""
    w = waves(arch, ctas, per_sm)
    if w <= 1:
        return min(ctas, arch.sms) / arch.sms
    return w / math.ceil(w)


# The output tile the model assumes cuBLAS runs large 16-bit GEMMs with on Hopper (one CTA per
# SM, CUTLASS's 128 x 256 default): an assumption, used only to give the reference GEMMs the same
# last-wave quantisation as the Triton launches, and to take it out of the measured ceiling.
CUBLAS_TILE = (128, 256)

# Rates derived from another ceiling: 3xTF32 runs three TF32 products per product, and two
# where one operand is a 16-bit tile cast to fp32 (exact in TF32: kernels/_common.mma_widened).
DERIVED_RATES = {"tf32x3": ("tf32", 3.0), "tf32x2": ("tf32", 2.0)}


def gemm_utilisation(arch: Arch, M: int, N: int) -> float:
    """The share of the GPU a large GEMM with an [M, N] output keeps busy at CUBLAS_TILE tiles,
    one per SM; 1.0 below one wave (cuBLAS then picks smaller tiles or splits K: no model)."""
    tiles = math.ceil(M / CUBLAS_TILE[0]) * math.ceil(N / CUBLAS_TILE[1])
    return utilisation(arch, tiles, 1) if tiles >= arch.sms else 1.0


def peak(arch: Arch, rate: str) -> float:
    """The ceiling of `rate` with the whole GPU busy (TFLOP/s, GB/s or T instructions/s): a
    measured matmul ceiling is divided by its own GEMM's utilisation, so launches and reference
    GEMMs that are quantised alike are modelled alike."""
    if rate in DERIVED_RATES:
        base, passes = DERIVED_RATES[rate]
        return peak(arch, base) / passes
    ceiling = arch.ceilings[rate]
    if ceiling.measured_shape is None:
        return ceiling.value
    return ceiling.value / gemm_utilisation(arch, *ceiling.measured_shape)


@dataclass(frozen=True)
class Prediction:
    rate: str  # the ceiling the products run at ("tc16+tf32x3" when several): see `rate_of`
    compute_us: float
    memory_us: float
    predicted_us: float


def predict(
    arch: Arch, work: dict[str, float], dram_bytes: float, busy: float, l2_bytes: float = 0.0
) -> Prediction:
    """max(compute, memory) at the arch's peaks scaled by `busy` (utilisation). `work` maps each
    rate the launch's products run at ("tc16", "tf32", "tf32x3", "tf32x2", "fp32") to their
    FLOPs; their compute times add up (one SM's tensor cores run one product at a time). Memory
    is the DRAM bytes' time, or the `l2_bytes`' (the tile walks' traffic between L2 and the SMs)
    where that is longer and the arch has an "l2" ceiling: none has been measured yet, so today
    the L2 traffic is only reported (l2_bound.py)."""
    busy = max(busy, 1e-9)
    compute = sum(flops / (peak(arch, rate) * 1e12 * busy) * 1e6
                  for rate, flops in work.items() if flops and rate != "none")  # fmt: skip
    memory = dram_bytes / (peak(arch, "dram") * 1e9 * busy) * 1e6
    if l2_bytes and "l2" in arch.ceilings:
        memory = max(memory, l2_bytes / (peak(arch, "l2") * 1e9 * busy) * 1e6)
    rates = "+".join(sorted(r for r, f in work.items() if f)) or "none"
    return Prediction(rates, compute, memory, max(compute, memory))


def rate_of(tensor_core_types: set[str], fma_count: int, flops: float) -> str:
    """Which ceiling a launch's products run at, from the instructions its code uses."""
    if not flops:
        return "none"
    if tensor_core_types & {"bf16", "f16"}:
        return "tc16"
    if "tf32" in tensor_core_types:
        return "tf32"
    return "fp32"


def product_rate(dtypes, precision: str | None, tensor_core_types: set[str]) -> str:
    """The ceiling of a product of operands of `dtypes` (one dtype: both alike): a 16-bit
    operand widened to meet an fp32 one under 3xTF32 needs two TF32 products ("tf32x2")."""
    widest = max(dtypes, key=lambda d: d.itemsize)
    rate = operand_rate(widest, precision, tensor_core_types)
    if rate == "tf32x3" and min(d.itemsize for d in dtypes) == 2:
        return "tf32x2"
    return rate


def operand_rate(dtype, precision: str | None, tensor_core_types: set[str]) -> str:
    """The ceiling a product with `dtype` operands runs at in a launch whose code uses
    `tensor_core_types`: tensor cores when the code has them for that dtype (fp32 as TF32, or
    3xTF32 under PRECISION "tf32x3"), else the FMA units."""
    if dtype.itemsize == 2:
        return "tc16" if tensor_core_types & {"bf16", "f16"} else "fp32"
    if "tf32" in tensor_core_types and precision in ("tf32", "tf32x3"):
        return precision
    return "fp32"
