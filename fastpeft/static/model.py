"""The static model's arithmetic: occupancy and waves from a compile's resources, and a roofline
time per launch that accounts for waves and for tensor cores vs FMA units. A prediction, never a
measurement: everything it produces is labelled "model".
"""

import math
from dataclasses import dataclass

from .archs import CTA_RESERVED_SHARED, REGISTER_UNIT, Arch


def ctas_per_sm(arch: Arch, registers: int, shared_bytes: int, num_warps: int) -> int:
    """Resident CTAs per SM, limited by threads, registers (allocated per warp in units of 256)
    and shared memory (plus the system's 1 KiB per CTA)."""
    threads = 32 * num_warps
    by_threads = arch.max_threads_per_sm // threads
    per_warp = math.ceil(max(registers, 1) * 32 / REGISTER_UNIT) * REGISTER_UNIT
    by_registers = arch.registers_per_sm // (per_warp * num_warps)
    by_shared = arch.shared_per_sm // (shared_bytes + CTA_RESERVED_SHARED)
    return max(0, min(arch.max_ctas_per_sm, by_threads, by_registers, by_shared))


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


@dataclass(frozen=True)
class Prediction:
    rate: str  # the ceiling the products run at: "tc16", "tf32", "fp32" (FMA) or "none"
    compute_us: float
    memory_us: float
    predicted_us: float


def predict(arch: Arch, flops: float, dram_bytes: float, rate: str, busy: float) -> Prediction:
    """max(compute, memory) at the arch's ceilings scaled by `busy` (utilisation)."""
    busy = max(busy, 1e-9)
    compute = 0.0
    if flops and rate != "none":
        compute = flops / (arch.ceilings[rate].value * 1e12 * busy) * 1e6
    memory = dram_bytes / (arch.ceilings["dram"].value * 1e9 * busy) * 1e6
    return Prediction(rate, compute, memory, max(compute, memory))


def rate_of(tensor_core_types: set[str], fma_count: int, flops: float) -> str:
    """Which ceiling a launch's products run at, from the instructions its code uses."""
    if not flops:
        return "none"
    if tensor_core_types & {"bf16", "f16"}:
        return "tc16"
    if "tf32" in tensor_core_types:
        return "tf32"
    return "fp32"
