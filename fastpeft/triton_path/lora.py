"""Host side of the Triton LoRA kernels (backend "triton", and "hybrid" through lora_hybrid.py):
allocation and launches.

The functions share the PyTorch path's signatures (fastpeft/torch_path/lora.py), so the ops call
either without branching. Tiles and reduction splits come from lora_plan.py. The dropout mask
reaches the backward as the bits the forward stored (`keep`), or, when FASTPEFT_DROPOUT_MASK is
"regenerate", `keep` is empty and the backward kernels draw it again from the seed.

Partial sums (t over splits of K, u over splits of N, dB over row blocks or splits of M, dA over
splits of M) are fp32 and summed in a fixed order (partials.sum_partials): deterministic.
"""

import torch
import torch.nn.functional as F
import triton

from .. import env
from ..kernels import lora as kernels
from . import dropout, lora_plan, waves
from .launch import launch, target_for
from .lora_plan import launch_configs
from .partials import sum_partials

_EMPTY = (0,)


def _mask_bits(x: torch.Tensor, p: float, members: int) -> torch.Tensor:
    """Where the forward stores the keep-masks: [members, M, ceil(K / 8)] uint8 (1 bit per
    element) when dropout is on and FASTPEFT_DROPOUT_MASK is "bits" (the default), else an empty
    tensor (the backward kernels draw the masks again from the seeds)."""
    shape, dtype = mask_spec(x, p)
    return torch.empty(
        (members, *shape) if len(shape) == 2 else shape, device=x.device, dtype=dtype
    )


def forward(x, weight, bias, lora_a, lora_b, seed, scaling: float, p: float):
    """(y, t, keep) for 2-D x: y = x Wᵀ + b + s·(drop(x) Aᵀ) Bᵀ, t = drop(x) Aᵀ (adapter dtype);
    keep is the mask's bits, or empty when the backward draws it again."""
    return run_forward(x, weight, bias, lora_a, lora_b, seed, scaling, p, hybrid=False)


def backward(dy, x, weight, lora_a, lora_b, t, keep, seed, scaling: float, p: float, need_dx):
    """(dx or None, dA, dB) for 2-D dy/x. `keep` holds the forward's mask bits, or is empty (the
    kernels draw the mask from `seed`)."""
    return run_backward(
        dy, x, weight, lora_a, lora_b, t, keep, seed, scaling, p, need_dx, hybrid=False
    )


def shared_down(x, lora_as, seeds, p: float):
    """(t, keep) of up to three adapters of one rank and dtype on the same input x (shared-input
    LoRA: q/k/v, gate/up), from one lora_down_kernel launch that reads x once: t [M, members, R]
    (member g's t = drop_g(x) A_gᵀ at t[:, g]), keep [members, M, ceil(K / 8)] their masks' bits
    (each member's own seed: the masks are independent, as PEFT's separate dropout modules
    draw them), or empty when the backward draws them again."""
    return _down(x, lora_as, seeds, p)


def forward_up(x, weight, bias, lora_b, t, scaling: float):
    """y = x Wᵀ + b + s · t Bᵀ for a t `shared_down` computed (the fused base GEMM)."""
    return run_up(x, weight, bias, t, lora_b, scaling, hybrid=False)


def run_forward(x, weight, bias, lora_a, lora_b, seed, scaling, p, hybrid: bool):
    """`forward`, with the base product x Wᵀ + b fused into lora_fwd_kernel, or (hybrid) by
    cuBLAS (F.linear) with the rank-r update added in place by the same kernel."""
    t, bits = _down(x, [lora_a], [seed], p)
    y = run_up(x, weight, bias, t[:, 0], lora_b, scaling, hybrid)
    return y, t[:, 0], bits[0] if bits.numel() else bits


def _down(x, lora_as, seeds, p):
    """(t [M, members, R], bits [members, M, ceil(K / 8)] or empty): lora_down_kernel for one to
    three adapters on x, with K split so the grid fills a wave (fp32 partials summed in order)."""
    M, K = x.shape
    members, lora_a = len(lora_as), lora_as[0]
    R = lora_a.shape[0]
    target = target_for(x.device)
    cfg = launch_configs(target, x.dtype, lora_a.dtype, R, members)
    bits = _mask_bits(x, p, members)
    down = dict(cfg["down"])
    block_m, block_k = down.pop("BLOCK_M"), down.pop("BLOCK_INNER")
    m_blocks = triton.cdiv(M, block_m)
    rank_tiles = members * cfg["shared"]["BLOCK_R"] * lora_a.element_size()
    stage = (block_m * x.element_size() + rank_tiles) * block_k
    traffic = (x.numel() * x.element_size(), 4 * M * members * R)
    k_blocks = triton.cdiv(K, block_k)
    a1, a2 = (lora_as + [lora_a] * 2)[1:3]
    t = torch.empty((M, members, R), device=x.device, dtype=lora_a.dtype)
    seed0, seed1, seed2 = (seeds + [seeds[0]] * 2)[:3] if p > 0 else (t, t, t)
    flags = dict(MEMBERS=members, HAS_DROPOUT=p > 0, STORE_BITS=bits.numel() > 0,
                 BLOCK_M=block_m, BLOCK_K=block_k, **cfg["shared"], **down)  # fmt: skip

    def arguments(per: int, splits: int):
        out = t if splits == 1 else x.new_empty((splits, M, members, R), dtype=torch.float32)
        args = (
            x, lora_a, a1, a2, out, seed0, seed1, seed2, bits if bits.numel() else t,
            M, K, R, p, per * block_k,
            x.stride(0), x.stride(1), lora_a.stride(0), lora_a.stride(1),
            0 if splits == 1 else out.stride(0), out.stride(-3), out.stride(-2), out.stride(-1),
            bits.stride(0) if bits.numel() else 0, bits.stride(1) if bits.numel() else 0,
        )  # fmt: skip
        return out, args

    probe = _probe(kernels.lora_down_kernel, flags, (x, lora_a), lambda: arguments(1, 2)[1])
    per, splits = waves.split(target, k_blocks, m_blocks, cfg["down"], stage, traffic, probe)
    out, args = arguments(per, splits)
    launch(kernels.lora_down_kernel, (m_blocks, splits), *args, **flags)
    return (t if splits == 1 else sum_partials(out, lora_a.dtype)), bits


def _probe(kernel, flags: dict, operands: tuple, build_args) -> waves.Probe:
    """The probe waves.split asks the compile about: a launch of `kernel` with these constexpr
    `flags`, keyed by them and the operands' dtypes (what decides its registers), whose arguments
    `build_args()` makes (a two-split launch: its fp32 partials are the common case)."""
    key = (tuple(sorted(flags.items())), tuple(t.dtype for t in operands))
    return kernel, key, lambda: (build_args(), flags)


def run_up(x, weight, bias, t, lora_b, scaling, hybrid: bool):
    """y = x Wᵀ + b + s · t Bᵀ: lora_fwd_kernel with the base GEMM in its accumulator, or
    (hybrid) cuBLAS's F.linear with the update added in place."""
    M, K = x.shape
    N, R = lora_b.shape
    cfg = launch_configs(target_for(x.device), x.dtype, lora_b.dtype, R)
    if hybrid:
        y = F.linear(x, weight, bias)
    else:
        y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    gemm = _in_place(cfg["fwd"], "BLOCK_N") if hybrid else cfg["fwd"]
    grid = (triton.cdiv(M, gemm["BLOCK_M"]) * triton.cdiv(N, gemm["BLOCK_N"]),)
    launch(
        kernels.lora_fwd_kernel, grid,
        x, weight, bias if bias is not None else weight, t, lora_b, y,
        M, N, K, R, scaling,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), t.stride(0), t.stride(1),
        lora_b.stride(0), lora_b.stride(1), y.stride(0), y.stride(1),
        HAS_BIAS=bias is not None, BASE_IN_Y=hybrid, **cfg["shared"], **gemm,
    )  # fmt: skip
    return y


def _u_and_db(dy, t, lora_b, scaling, cfg, target):
    """(u, dB): u = s · dy B in the adapter dtype and dB = s · dyᵀ t, from lora_dy_b_kernel (one
    read of dy, dB partials per row block) or, for wide ranks, lora_dy_b_kernel for u and
    lora_da_kernel's split-M reduction for dB (lora_plan.separate_db decides on the bytes)."""
    M, N = dy.shape
    R = lora_b.shape[1]
    skinny = dict(cfg["skinny"])
    block_m, block_n = skinny.pop("BLOCK_M"), skinny.pop("BLOCK_INNER")
    block_r, size = cfg["shared"]["BLOCK_R"], dy.element_size()
    m_blocks, n_blocks = triton.cdiv(M, block_m), triton.cdiv(N, block_n)
    stage = block_m * block_n * size + block_n * block_r * lora_b.element_size()
    db_reduction = _MReduction(dy, t, 0.0, _NO_MASK, cfg, target, transposed=True)
    separate = lora_plan.separate_db(M, N, R, dy.element_size(), m_blocks, db_reduction.splits)
    flags = dict(WITH_DB=not separate, BLOCK_M=block_m, BLOCK_N=block_n, **cfg["shared"], **skinny)

    def arguments(per: int, splits: int):
        u_parts = dy.new_empty((splits, M, R), dtype=torch.float32)
        db_parts = dy.new_empty((1 if separate else m_blocks, N, R), dtype=torch.float32)
        args = (
            dy, lora_b, t, u_parts, db_parts,
            M, N, R, per * block_n,
            dy.stride(0), dy.stride(1), lora_b.stride(0), lora_b.stride(1),
            t.stride(0), t.stride(1),
            u_parts.stride(0), u_parts.stride(1), u_parts.stride(2),
            db_parts.stride(0), db_parts.stride(1), db_parts.stride(2),
        )  # fmt: skip
        return u_parts, db_parts, args

    probe = _probe(kernels.lora_dy_b_kernel, flags, (dy, lora_b), lambda: arguments(1, 2)[2])
    per, splits = waves.split(target, n_blocks, m_blocks, cfg["skinny"], stage, probe=probe)
    u_parts, db_parts, args = arguments(per, splits)
    launch(kernels.lora_dy_b_kernel, (m_blocks, splits), *args, **flags)
    u = sum_partials(u_parts, lora_b.dtype, scaling)
    if separate:  # dBᵀ = tᵀ dy: lora_da_kernel's product (uᵀ x) with t for u and dy for x
        return u, db_reduction.run(lora_b.dtype, scaling)
    return u, sum_partials(db_parts, lora_b.dtype, scaling)


def run_backward(dy, x, weight, lora_a, lora_b, t, keep, seed, scaling, p, need_dx, hybrid):
    """`backward`, with dx's base product dy W fused into lora_dx_kernel, or (hybrid) by cuBLAS
    with the rank-r term (and dA's partials) added by the same kernel."""
    M, K = x.shape
    R = lora_b.shape[1]
    target = target_for(x.device)
    cfg = launch_configs(target, dy.dtype, lora_a.dtype, R)
    seed_arg = seed if seed is not None else t
    from_bits = keep.numel() > 0
    bits_arg, bits_stride = (keep, keep.stride(0)) if from_bits else (t, 0)
    u, d_lora_b = _u_and_db(dy, t, lora_b, scaling, cfg, target)

    mask = (seed_arg, bits_arg, bits_stride, from_bits)
    with_da = need_dx and lora_plan.fuse_da(R, lora_a.dtype)
    d_lora_a = None if with_da else _da(x, u, lora_a, p, mask, cfg, target)
    if not need_dx:
        return None, d_lora_a, d_lora_b
    N = dy.shape[1]
    dx = dy @ weight if hybrid else torch.empty((M, K), device=x.device, dtype=x.dtype)
    gemm = _in_place(cfg["dx"], "BLOCK_K") if hybrid else cfg["dx"]
    m_blocks, k_blocks = triton.cdiv(M, gemm["BLOCK_M"]), triton.cdiv(K, gemm["BLOCK_K"])
    per = lora_plan.dx_row_blocks(target, m_blocks, k_blocks) if with_da else 1
    chunks = triton.cdiv(m_blocks, per)
    da_out = _da_output(x, lora_a, chunks if with_da else 0)
    launch(
        kernels.lora_dx_kernel, (chunks * k_blocks,),
        dy, weight, u, lora_a, seed_arg, bits_arg, dx, x, da_out,
        M, N, K, R, p, per,
        dy.stride(0), dy.stride(1), weight.stride(0), weight.stride(1),
        u.stride(0), u.stride(1), lora_a.stride(0), lora_a.stride(1), bits_stride,
        dx.stride(0), dx.stride(1), x.stride(0), x.stride(1),
        da_out.stride(0) if da_out.dim() == 3 else 0, da_out.stride(-1), da_out.stride(-2),
        HAS_DROPOUT=p > 0, FROM_BITS=from_bits, WITH_DA=with_da, BASE_IN_DX=hybrid,
        **cfg["shared"], **gemm,
    )  # fmt: skip
    if with_da:
        d_lora_a = da_out if chunks == 1 else sum_partials(da_out, lora_a.dtype)
    return dx, d_lora_a, d_lora_b


def _in_place(gemm: dict, out_cols: str) -> dict:
    """A GEMM config for the hybrid path's in-place update: the output read into registers beside
    the fp32 accumulator (no pipelined loop) fits 128 columns without spilling, not 256."""
    return dict(gemm, **{out_cols: min(gemm[out_cols], 128)})


def _da_output(x, lora_a, splits: int) -> torch.Tensor:
    """Where a dA reduction over `splits` row splits writes: dA itself for one split (in the
    adapter dtype), else [splits, R, K] fp32 partials (none at all for 0)."""
    if splits == 1:
        return torch.empty_like(lora_a)
    return x.new_empty((splits, *lora_a.shape) if splits else (1, 1, 1), dtype=torch.float32)


_NO_MASK = (None, None, 0, False)  # (seed, bits, bits' row stride, from bits): no dropout


class _MReduction:
    """lora_da_kernel's reduction scale · uᵀ drop(x) over M (x [M, K], u [M, R]): its tiles, its
    split of M (waves.split, asking the compile through a probe) and its launch arguments. The
    result is [R, K], or its transpose [K, R] when `transposed` (dB = (tᵀ dy)ᵀ)."""

    def __init__(self, x, u, p, mask, cfg, target, transposed: bool):
        M, K = x.shape
        tiles = dict(cfg["da"])
        self.block_m, block_k = tiles.pop("BLOCK_M"), tiles.pop("BLOCK_INNER")
        self.k_blocks = triton.cdiv(K, block_k)
        self.x, self.u, self.p, self.mask, self.transposed = x, u, p, mask, transposed
        self.flags = dict(HAS_DROPOUT=p > 0, FROM_BITS=mask[3], BLOCK_M=self.block_m,
                          BLOCK_K=block_k, **cfg["shared"], **tiles)  # fmt: skip
        stage = self.block_m * block_k * x.element_size()
        stage += cfg["shared"]["BLOCK_R"] * self.block_m * u.element_size()
        probe = _probe(kernels.lora_da_kernel, self.flags, (x, u),
                       lambda: self.arguments(1, 2, torch.float32, direct=False)[1])  # fmt: skip
        m_blocks = triton.cdiv(M, self.block_m)
        self.per, self.splits = waves.split(
            target, m_blocks, self.k_blocks, cfg["da"], stage, probe=probe
        )

    def arguments(self, per: int, splits: int, dtype, direct: bool):
        """(out, args): out is the result itself (`direct`, in `dtype`) or [splits, ...] fp32
        partials."""
        x, u = self.x, self.u
        K, R = x.shape[1], u.shape[1]
        shape = (K, R) if self.transposed else (R, K)
        out = x.new_empty(shape if direct else (splits, *shape),
                          dtype=dtype if direct else torch.float32)  # fmt: skip
        seed_arg, bits_arg, bits_stride, _ = self.mask
        rows, cols = (out.stride(-1), out.stride(-2)) if self.transposed else out.stride()[-2:]
        args = (
            x, u, seed_arg if seed_arg is not None else u, bits_arg if bits_arg is not None else u,
            out, x.shape[0], K, R, self.p, per * self.block_m,
            x.stride(0), x.stride(1), u.stride(0), u.stride(1), bits_stride,
            0 if direct else out.stride(0), rows, cols,
        )  # fmt: skip
        return out, args

    def run(self, dtype, scale: float) -> torch.Tensor:
        direct = self.splits == 1 and scale == 1.0
        out, args = self.arguments(self.per, self.splits, dtype, direct)
        launch(kernels.lora_da_kernel, (self.k_blocks, self.splits), *args, **self.flags)
        return out if direct else sum_partials(out, dtype, scale)


def _da(x, u, lora_a, p, mask, cfg, target):
    """dA = uᵀ drop(x) by lora_da_kernel, M split so the grid fills a wave (fp32 partials summed
    in order)."""
    return _MReduction(x, u, p, mask, cfg, target, transposed=False).run(lora_a.dtype, 1.0)


def keep_mask(seed: torch.Tensor, M: int, K: int, p: float) -> torch.Tensor:
    """The [M, K] bool keep-mask the kernels derive from `seed` (tests and debugging only)."""
    return dropout.keep_mask(seed, M, K, p)


def mask_spec(x: torch.Tensor, p: float) -> tuple[tuple[int, ...], torch.dtype]:
    """(shape, dtype) of the mask `forward` returns for x: [M, ceil(K / 8)] uint8 (1 bit per
    element) when it stores the mask's bits, else empty."""
    if p > 0 and env.dropout_mask_mode() == "bits":
        return (x.shape[0], triton.cdiv(x.shape[1], 8)), torch.uint8
    return _EMPTY, torch.uint8
