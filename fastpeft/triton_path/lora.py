"""Host side of the Triton LoRA kernels (backend "triton"): configs, allocation, launches.

The functions share the PyTorch path's signatures (fastpeft/torch_path/lora.py), so the ops call
either without branching; the keep-mask is never stored here (the kernels regenerate it from the
seed), so `forward` returns an empty one and `backward` ignores it.
"""

import torch
import triton

from ..kernels import lora as kernels
from . import dropout
from .launch import Target, dot_flags, launch, target_for

# NOTE: untuned starting points (no GPU was available when these were written); the interpreter
# gets small blocks because each program runs serially in numpy. Two adjustments keep every launch
# within sm_90's 227 KiB of shared memory (checked without a GPU by tests/kernels/compile_sm90.py):
# - an fp32 base halves the GEMMs' reduction step (K in the forward, N in dx); with the 16-bit
#   tiles, lora_dx_kernel needed 288 KiB under TF32;
# - rank tiles wider than _WIDE_RANK_BYTES per row (rank > 128 with fp32 adapters) halve the
#   blocks that meet them, except the skinny kernels' BLOCK_M, which sets how many fp32 dB
#   partials lora_dy_b_kernel writes; otherwise rank 256 needed up to 256 KiB (lora_fwd_kernel's
#   epilogue) and 320 KiB (lora_dy_b_kernel under TF32).
_GPU_GEMM = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)
_GPU_SKINNY = dict(BLOCK_M=64, BLOCK_INNER=64, num_warps=4, num_stages=3)
_CPU_GEMM = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=4)
_CPU_SKINNY = dict(BLOCK_M=32, BLOCK_INNER=32)
_WIDE_RANK_BYTES = 512
_EMPTY = (0,)


def _rank_block(rank: int) -> int:
    return max(16, triton.next_power_of_2(rank))


def _wide_rank(block_r: int, adapter_dtype: torch.dtype) -> bool:
    return block_r * adapter_dtype.itemsize > _WIDE_RANK_BYTES


def _gemm_config(
    target: Target, dtype: torch.dtype, reduction: str, rank_cols: str, wide_rank: bool
) -> dict:
    """GEMM tiles for a `dtype` base. On a GPU, 4-byte tiles halve `reduction`, the block the
    GEMM steps along ("BLOCK_K" forward, "BLOCK_N" for dx), and a wide rank halves `rank_cols`,
    the output block its rank-r term multiplies ("BLOCK_N" forward, "BLOCK_K" for dx)."""
    if target.interpreter:
        return dict(_CPU_GEMM)
    cfg = dict(_GPU_GEMM)
    if dtype.itemsize == 4:
        cfg[reduction] //= 2
    if wide_rank:
        cfg[rank_cols] //= 2
    return cfg


def _skinny_config(target: Target, wide_rank: bool) -> dict:
    if target.interpreter:
        return dict(_CPU_SKINNY)
    cfg = dict(_GPU_SKINNY)
    if wide_rank:
        cfg["BLOCK_INNER"] //= 2
    return cfg


def _da_split(target: Target, M: int, k_blocks: int, block_m: int) -> tuple[int, int]:
    """(rows per split, splits) of M for lora_da_kernel: enough programs for about four per SM
    (one wave at up to four resident CTAs each), never an empty split. The interpreter takes two
    splits, so the CPU tests run the partial-sum path too; an M one program covers keeps one
    split, and dA is written directly."""
    want = 2 if target.interpreter else triton.cdiv(4 * target.sm_count, k_blocks)
    splits = max(1, min(triton.cdiv(M, block_m), want))
    rows = triton.cdiv(triton.cdiv(M, splits), block_m) * block_m
    return rows, triton.cdiv(M, rows) if M else 1


def launch_configs(
    target: Target, base_dtype: torch.dtype, adapter_dtype: torch.dtype, rank: int
) -> dict[str, dict]:
    """Every launch's configuration for `target`: "skinny" (lora_down, lora_dy_b, lora_da: the
    rank-wide kernels, BLOCK_INNER being their K or N step), "fwd" and "dx" (the GEMMs), plus
    BLOCK_R and the dot flags shared by all."""
    block_r = _rank_block(rank)
    wide = _wide_rank(block_r, adapter_dtype)
    return dict(
        skinny=_skinny_config(target, wide),
        fwd=_gemm_config(target, base_dtype, "BLOCK_K", "BLOCK_N", wide),
        dx=_gemm_config(target, base_dtype, "BLOCK_N", "BLOCK_K", wide),
        shared=dict(BLOCK_R=block_r, **dot_flags(target)),
    )


def forward(x, weight, bias, lora_a, lora_b, seed, scaling: float, p: float):
    """(y, t, keep) for 2-D x: y = x Wᵀ + b + s·(drop(x) Aᵀ) Bᵀ, t = drop(x) Aᵀ (adapter dtype);
    keep is empty (the kernels regenerate the mask)."""
    M, K = x.shape
    N, R = lora_b.shape
    cfg = launch_configs(target_for(x.device), x.dtype, lora_a.dtype, R)
    t = torch.empty((M, R), device=x.device, dtype=lora_a.dtype)
    skinny = dict(cfg["skinny"])
    block_m, block_k = skinny.pop("BLOCK_M"), skinny.pop("BLOCK_INNER")
    launch(
        kernels.lora_down_kernel, (triton.cdiv(M, block_m),),
        x, lora_a, t, seed if seed is not None else t,
        M, K, R, p,
        x.stride(0), x.stride(1), lora_a.stride(0), lora_a.stride(1), t.stride(0), t.stride(1),
        HAS_DROPOUT=p > 0, BLOCK_M=block_m, BLOCK_K=block_k, **cfg["shared"], **skinny,
    )  # fmt: skip
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    gemm = cfg["fwd"]
    grid = (triton.cdiv(M, gemm["BLOCK_M"]) * triton.cdiv(N, gemm["BLOCK_N"]),)
    launch(
        kernels.lora_fwd_kernel, grid,
        x, weight, bias if bias is not None else weight, t, lora_b, y,
        M, N, K, R, scaling,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), t.stride(0), t.stride(1),
        lora_b.stride(0), lora_b.stride(1), y.stride(0), y.stride(1),
        HAS_BIAS=bias is not None, **cfg["shared"], **gemm,
    )  # fmt: skip
    return y, t, x.new_empty(_EMPTY, dtype=torch.bool)


def backward(dy, x, weight, lora_a, lora_b, t, keep, seed, scaling: float, p: float, need_dx):
    """(dx or None, dA, dB) for 2-D dy/x; dB is reduced from per-block partials in fixed order.
    `keep` is unused: the kernels regenerate the forward's mask from `seed`."""
    M, K = x.shape
    N, R = lora_b.shape
    target = target_for(x.device)
    cfg = launch_configs(target, dy.dtype, lora_a.dtype, R)
    seed_arg = seed if seed is not None else t
    skinny = dict(cfg["skinny"])
    block_m, block_inner = skinny.pop("BLOCK_M"), skinny.pop("BLOCK_INNER")

    num_m_blocks = triton.cdiv(M, block_m)
    u = torch.empty((M, R), device=x.device, dtype=lora_b.dtype)
    db_partials = torch.empty((num_m_blocks, N, R), device=x.device, dtype=torch.float32)
    launch(
        kernels.lora_dy_b_kernel, (num_m_blocks,),
        dy, lora_b, t, u, db_partials,
        M, N, R, scaling,
        dy.stride(0), dy.stride(1), lora_b.stride(0), lora_b.stride(1), t.stride(0), t.stride(1),
        u.stride(0), u.stride(1), db_partials.stride(0), db_partials.stride(1),
        db_partials.stride(2),
        BLOCK_M=block_m, BLOCK_N=block_inner, **cfg["shared"], **skinny,
    )  # fmt: skip
    d_lora_b = db_partials.sum(dim=0).mul_(scaling).to(lora_b.dtype)

    k_blocks = triton.cdiv(K, block_inner)
    rows, splits = _da_split(target, M, k_blocks, block_m)
    d_lora_a = torch.empty_like(lora_a)
    # One split writes dA itself; more write fp32 partials, summed in a fixed order below.
    out = d_lora_a if splits == 1 else x.new_empty((splits, R, K), dtype=torch.float32)
    split_stride = 0 if splits == 1 else out.stride(0)
    launch(
        kernels.lora_da_kernel, (k_blocks, splits),
        x, u, seed_arg, out,
        M, K, R, p, rows,
        x.stride(0), x.stride(1), u.stride(0), u.stride(1),
        split_stride, out.stride(-2), out.stride(-1),
        HAS_DROPOUT=p > 0, BLOCK_M=block_m, BLOCK_K=block_inner, **cfg["shared"], **skinny,
    )  # fmt: skip
    if splits > 1:
        d_lora_a = out.sum(dim=0).to(lora_a.dtype)

    dx = None
    if need_dx:
        dx = torch.empty((M, K), device=x.device, dtype=x.dtype)
        gemm = cfg["dx"]
        grid = (triton.cdiv(M, gemm["BLOCK_M"]) * triton.cdiv(K, gemm["BLOCK_K"]),)
        launch(
            kernels.lora_dx_kernel, grid,
            dy, weight, u, lora_a, seed_arg, dx,
            M, N, K, R, p,
            dy.stride(0), dy.stride(1), weight.stride(0), weight.stride(1),
            u.stride(0), u.stride(1), lora_a.stride(0), lora_a.stride(1),
            dx.stride(0), dx.stride(1),
            HAS_DROPOUT=p > 0, **cfg["shared"], **gemm,
        )  # fmt: skip
    return dx, d_lora_a, d_lora_b


def keep_mask(seed: torch.Tensor, M: int, K: int, p: float) -> torch.Tensor:
    """The [M, K] bool keep-mask the kernels derive from `seed` (tests and debugging only)."""
    return dropout.keep_mask(seed, M, K, p)


def mask_shape(x: torch.Tensor, p: float) -> tuple[int, ...]:
    """Nothing is stored: the kernels regenerate the mask."""
    return _EMPTY
