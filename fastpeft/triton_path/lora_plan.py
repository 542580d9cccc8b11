"""Launch plans of the Triton LoRA kernels: tiles per target, and how the rank-wide (skinny)
kernels split their reductions so that every launch fills at least one wave of the GPU.

A function of `launch.Target` (architecture and SM count) and the dtypes and sizes of a call, so
the static suite and the sm_90 compile check see exactly what a Hopper GPU would run.
"""

import torch
import triton

from .launch import Target, dot_flags, rank_term_precision

# GPU GEMM tiles for Hopper: 128 x 256 output tiles on 8 warps (two warpgroups of wgmma), the
# shape Triton's Hopper matmul tutorials and CUTLASS's defaults use for large 16-bit GEMMs; dx
# gets the same output tile (its reduction runs over N). The rank-r tiles t/B (forward) and u/A
# (dx) stay in shared memory beside the pipeline's stages, so `_fit_shared` trades stages, then
# output width, for wide ranks and fp32 adapters, until the kernel fits sm_90's 227 KiB (checked
# without a GPU by tests/kernels/compile_sm90.py and the static suite's gates). The interpreter
# gets small blocks because each program runs serially in numpy.
_GPU_FWD = dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4)
_GPU_DX = dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=256, GROUP_M=8, num_warps=8, num_stages=4)
_GPU_SKINNY = dict(BLOCK_M=256, BLOCK_INNER=64, num_warps=8, num_stages=3)
_CPU_GEMM = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=4)
_CPU_SKINNY = dict(BLOCK_M=32, BLOCK_INNER=32)
_SHARED_BUDGET = 200 * 1024  # of sm_90's 227 KiB: Triton's own scratch takes the rest


def rank_block(rank: int) -> int:
    return max(16, triton.next_power_of_2(rank))


def _fit_shared(cfg: dict, reduction: str, out_cols: str, base: int, adapter: int, rank: int):
    """Shrink `cfg` until its shared memory (pipeline stages of the base tiles, plus the rank-r
    tiles) fits the budget: first stages (down to 2), then the output width `out_cols`, then
    BLOCK_M (down to 64)."""

    def shared(c: dict) -> int:
        stage = (c["BLOCK_M"] + c[out_cols]) * c[reduction] * base
        return c["num_stages"] * stage + (c["BLOCK_M"] + c[out_cols]) * rank * adapter

    while shared(cfg) > _SHARED_BUDGET:
        if cfg["num_stages"] > 2:
            cfg["num_stages"] -= 1
        elif cfg[out_cols] > 64:
            cfg[out_cols] //= 2
        elif cfg["BLOCK_M"] > 64:
            cfg["BLOCK_M"] //= 2
        else:
            break
    return cfg


def _gemm_config(
    target: Target, dtype: torch.dtype, adapter_dtype: torch.dtype, block_r: int, reduction: str
) -> dict:
    """GEMM tiles for a `dtype` base with rank tiles of `block_r` columns. `reduction` is the
    block the GEMM steps along ("BLOCK_K" forward, "BLOCK_N" for dx): 4-byte base tiles halve it
    (as 16-bit ones, a step stays 128 bytes wide)."""
    if target.interpreter:
        return dict(_CPU_GEMM)
    forward = reduction == "BLOCK_K"
    cfg = dict(_GPU_FWD if forward else _GPU_DX)
    if dtype.itemsize == 4:
        cfg[reduction] //= 2
    out_cols = "BLOCK_N" if forward else "BLOCK_K"
    return _fit_shared(cfg, reduction, out_cols, dtype.itemsize, adapter_dtype.itemsize, block_r)


def _skinny_config(target: Target, base: int, adapter: int, block_r: int, members: int = 1) -> dict:
    """Tiles of the rank-wide kernels: each stage loads a [BLOCK_M, BLOCK_INNER] base-dtype tile
    and a rank tile of at most max(BLOCK_M, BLOCK_INNER) x BLOCK_R; wide ranks and fp32
    adapters trade stages, then the inner step, then BLOCK_M, until that fits the budget.
    `members` adapters sharing one input (lora_down_kernel's shared-input launch) each hold their
    own accumulator and rank tiles: BLOCK_M shrinks so that all of them fit as one would."""
    if target.interpreter:
        return dict(_CPU_SKINNY)
    cfg = dict(_GPU_SKINNY)
    # Row blocks as tall as registers allow (fewer dB and dA partials): BLOCK_M x BLOCK_R rank
    # tiles of at most 128 x 128 for 16-bit adapters; fp32 operands are split into TF32 high and
    # low parts in registers (3xTF32), so at most 128 rows and 128 x 64, at half the step.
    # Larger tiles spill (the static suite's gate checks every launch).
    tallest, largest = (256, 128 * 128) if adapter == 2 else (128, 128 * 64)
    if members > 1:
        # Each member masks and casts its own copy of the x tile, beside its own accumulator:
        # the tiles the static compile keeps spill-free with the most elements a thread (the
        # dropout's per-step work spread thinnest) are 128 x 64 for two members and, for three,
        # 64 x 128 (16-bit adapters) or 64 x 64 (fp32 ones, split for 3xTF32 in registers).
        tallest = 128 if members == 2 else 64
        if members > 2 and adapter == 2:
            cfg["BLOCK_INNER"] *= 2
    if adapter == 4 and members == 1:
        cfg["BLOCK_INNER"] //= 2
    elif block_r >= 128:
        # Wide 16-bit ranks take a wider step: more elements a thread per step spread the
        # dropout's per-step work (its instruction budget, checked by the static suite).
        cfg["BLOCK_INNER"] *= 2
    cfg["BLOCK_M"] = min(cfg["BLOCK_M"], tallest)
    while cfg["BLOCK_M"] * block_r * members > largest and cfg["BLOCK_M"] > 32:
        cfg["BLOCK_M"] //= 2

    def shared(c: dict) -> int:
        rank_tile = members * max(c["BLOCK_M"], c["BLOCK_INNER"]) * block_r * adapter
        return c["num_stages"] * (c["BLOCK_M"] * c["BLOCK_INNER"] * base + rank_tile)

    while shared(cfg) > _SHARED_BUDGET:
        if cfg["num_stages"] > 2:
            cfg["num_stages"] -= 1
        elif cfg["BLOCK_INNER"] > 32:
            cfg["BLOCK_INNER"] //= 2
        elif cfg["BLOCK_M"] > 32:
            cfg["BLOCK_M"] //= 2
        else:
            break
    return cfg


def _down_config(target: Target, base: int, adapter: int, block_r: int, members: int) -> dict:
    """Tiles of lora_down_kernel: the skinny tiles for `members` adapters, with a wider step for
    one fp32 adapter of rank 64 or more (the A tile it splits for 3xTF32 each step is then
    spread over more x columns, as in `_reduction_config`)."""
    cfg = _skinny_config(target, base, adapter, block_r, members)
    if not target.interpreter and adapter == 4 and block_r >= 64 and members == 1:
        cfg["BLOCK_INNER"] = 64
    return cfg


def _reduction_config(target: Target, base: int, adapter: int, block_r: int) -> dict:
    """Tiles of lora_da_kernel's split-M reductions (dA = uᵀ x, and dB at wide ranks): the
    skinny tiles, but with fp32 rank tiles of 64 or more a wider step. Each step loads and
    converts a [BLOCK_R, BLOCK_M] rank tile for BLOCK_INNER columns of x; at the fp32 step of
    32 columns that is four rank elements per x element, and the instructions, not the bytes,
    bound the launch (the static model's issue time)."""
    cfg = _skinny_config(target, base, adapter, block_r)
    if not target.interpreter and adapter == 4 and block_r >= 64:
        cfg["BLOCK_INNER"] = 128
    return cfg


def separate_db(M: int, N: int, rank: int, dy_bytes: int, fused_parts: int, db_parts: int) -> bool:
    """Whether dB is cheaper as its own reduction (lora_da_kernel's: a second read of dy, `db_parts`
    fp32 partials of [N, R]) than inside lora_dy_b_kernel (one read, `fused_parts` partials, one
    per row block). Partials are written once and read once by the host's sum; wide ranks tip
    it (rank 128 at the bench's shapes), rank 16 does not."""
    fused = 2 * 4 * fused_parts * N * rank
    separate = M * N * dy_bytes + 2 * 4 * db_parts * N * rank
    return separate < fused


# dA rides along lora_dx_kernel up to this rank, for 16-bit adapters: its [BLOCK_K, BLOCK_R]
# fp32 accumulator then costs at most 32 registers a thread beside dx's own and its per-program
# partials stay small; wider ranks, and fp32 x tiles split for 3xTF32, spill, so lora_da_kernel
# reduces dA on its own there.
FUSED_DA_MAX_RANK = 32


def fuse_da(rank: int, adapter_dtype: torch.dtype) -> bool:
    return rank <= FUSED_DA_MAX_RANK and adapter_dtype.itemsize == 2


def dx_row_blocks(target: Target, m_blocks: int, k_blocks: int) -> int:
    """Row blocks per lora_dx_kernel program when it also reduces dA: the most of 4, 2, 1 that
    keeps two programs per SM (fewer programs, fewer dA partials to write and sum). The
    interpreter takes 2, so the CPU tests walk the loop (and its past-the-end rows)."""
    if target.interpreter:
        return 2 if m_blocks > 1 else 1
    for blocks in (4, 2):
        if k_blocks * triton.cdiv(m_blocks, blocks) >= 2 * target.sm_count:
            return blocks
    return 1


def launch_configs(
    target: Target,
    base_dtype: torch.dtype,
    adapter_dtype: torch.dtype,
    rank: int,
    members: int = 1,
) -> dict[str, dict]:
    """Every launch's configuration for `target`: "skinny" (lora_dy_b: a rank-wide kernel,
    BLOCK_INNER being its N step), "down" (lora_down's, for `members` adapters reading one
    input), "da" (lora_da's split-M reductions), "fwd" and "dx" (the GEMMs, with the dot precision
    of their rank-r term), plus BLOCK_R and the dot flags shared by all."""
    block_r = rank_block(rank)
    base, adapter = base_dtype.itemsize, adapter_dtype.itemsize
    dx = _gemm_config(target, base_dtype, adapter_dtype, block_r, "BLOCK_N")
    if fuse_da(rank, adapter_dtype) and not target.interpreter:
        # dA's accumulator and x tile sit beside dx's: a 128-wide tile keeps them in registers
        # (at 256, 255 registers a thread and spills).
        dx["BLOCK_K"] = min(dx["BLOCK_K"], 128)
    flags = dot_flags(target)
    # y and dx are rounded to the base dtype: their rank-r term may take fewer TF32 products.
    rank = dict(RANK_PRECISION=rank_term_precision(flags, base_dtype))
    return dict(
        skinny=_skinny_config(target, base, adapter, block_r),
        down=_down_config(target, base, adapter, block_r, members),
        da=_reduction_config(target, base, adapter, block_r),
        fwd=dict(_gemm_config(target, base_dtype, adapter_dtype, block_r, "BLOCK_K"), **rank),
        dx=dict(dx, **rank),
        shared=dict(BLOCK_R=block_r, **flags),
    )
