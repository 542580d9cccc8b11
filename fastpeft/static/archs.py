"""The GPUs the static model predicts for: SM resources (for occupancy) and throughput ceilings.

Every ceiling names its source. Datasheet figures are dense (no 2:4 sparsity). A ceiling measured
by `fastpeft bench` on the device replaces the datasheet's (`measured` sources), since that is
what the hardware gives this code; the others stay documented until a run measures them.
"""

from dataclasses import dataclass, field

H100_DATASHEET = "NVIDIA H100 Tensor Core GPU datasheet (SXM5; dense: half the sparse figures)"
H200_DATASHEET = "NVIDIA H200 Tensor Core GPU datasheet (SXM; dense: half the sparse figures)"
A100_DATASHEET = "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB)"
CUDA_GUIDE = "CUDA C++ Programming Guide, compute capability table"
H200_RUN = "measured: benchmarks/results/h200_bench_spider_full.json (NVIDIA H200, best of 60)"
ISSUE = ("4 warp schedulers x 32 lanes per SM per clock (CUDA C++ Programming Guide, arithmetic "
         "instruction throughput) x SMs x max boost clock")  # fmt: skip


@dataclass(frozen=True)
class Ceiling:
    value: float  # TFLOP/s, or GB/s for memory
    source: str
    # The [M, N] output of the GEMM a measured matmul ceiling was timed on: that time includes
    # the GEMM's own last-wave quantisation, which the model takes out (model.peak).
    measured_shape: tuple[int, int] | None = None
    measured_k: int | None = None  # and its reduction (l2_bound.implied_by_matmul)


@dataclass(frozen=True)
class Arch:
    """One GPU: `name` (sm_90), the device its ceilings are of, its SM resources, ceilings."""

    name: str
    sm: int  # compute capability x10
    device: str
    sms: int
    registers_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    max_ctas_per_sm: int = 32
    shared_per_sm: int = 228 * 1024  # bytes, incl. 1 KiB reserved per resident CTA
    # TFLOP/s: tc16, tf32, fp32 (FMA); GB/s: dram, and l2 (read, L2 to the SMs) where a run has
    # measured it (the proof kit's l2_read_gbps): the model then costs the tile walks' L2
    # traffic (model.predict), of the Triton kernels (their modules' REREADS) and of the
    # references' GEMMs (sequences.gemm_rereads: cuBLAS at model.CUBLAS_TILE, no multicast)
    # alike. Check first that the measured figure is at least l2_bound.implied_by_matmul's:
    # below it, cuBLAS shares tiles between CTAs and the references' walks overstate theirs.
    # T thread-instructions/s: issue
    ceilings: dict[str, Ceiling] = field(default_factory=dict)


ARCHS = {
    "sm_90": Arch(
        name="sm_90",
        sm=90,
        device="NVIDIA H200 (Hopper: H100's SMs, HBM3e)",
        sms=132,
        shared_per_sm=228 * 1024,
        ceilings={
            "tc16": Ceiling(
                751.4,
                H200_RUN + ", bf16 matmul 8192^3 (datasheet: 989.4)",
                measured_shape=(8192, 8192),
                measured_k=8192,
            ),  # fmt: skip
            "tf32": Ceiling(494.7, H200_DATASHEET),
            "fp32": Ceiling(66.9, H200_DATASHEET),
            "dram": Ceiling(4132.0, H200_RUN + ", device copy (datasheet: 4800)"),
            # 132 SMs x 128 lanes x 1.98 GHz (H100/H200 SXM max boost): T instructions/s.
            "issue": Ceiling(33.45, ISSUE + ", 1980 MHz"),
        },
    ),
    "sm_80": Arch(
        name="sm_80",
        sm=80,
        device="NVIDIA A100 SXM4 80GB",
        sms=108,
        shared_per_sm=164 * 1024,
        ceilings={
            "tc16": Ceiling(312.0, A100_DATASHEET),
            "tf32": Ceiling(156.0, A100_DATASHEET),
            "fp32": Ceiling(19.5, A100_DATASHEET),
            "dram": Ceiling(2039.0, A100_DATASHEET),
            "issue": Ceiling(19.49, ISSUE + ", 1410 MHz (" + A100_DATASHEET + ")"),
        },
    ),
}
H100_SXM = {"tc16": 989.4, "tf32": 494.7, "fp32": 66.9, "dram": 3350.0}  # for the README's note

# Resources per SM (both archs): CUDA_GUIDE. The per-warp register unit (256) and the 1 KiB of
# shared memory the system keeps per resident CTA are fastpeft/triton_path/waves.py's: the host
# code's split choice counts resident CTAs as the model does.


def get(name: str) -> Arch:
    if name not in ARCHS:
        raise ValueError(f"--arch must be one of {tuple(ARCHS)}, got {name!r}")
    return ARCHS[name]
