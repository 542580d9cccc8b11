"""Host side of the Triton adapter kernels (backend "triton"): configs, allocation, launches.

Same signatures as the PyTorch path (fastpeft/torch_path/adapter.py), on 2-D inputs. A pair's two
bottleneck activations live side by side in one pre [M, 2H] (and g, a likewise), so each half is a
strided view the kernels address with the shared strides.
"""

import contextlib
import math

import torch
import triton

from .. import env
from ..kernels import adapter as kernels
from .launch import Target, dot_flags, launch, target_for
from .partials import sum_partials

# NOTE: untimed (no GPU was available). The GPU blocks were picked from GPU-less sm_90 compiles of
# the launches below at M=8192, d=4096, H=256 (triton 3.9 + ptxas -v): no register spills (at
# most 100 bytes, the pair's dz with dropout) at num_warps=8, <= 96 KiB of shared memory at 3
# stages. 128-row tiles spilled 0.1-10 KB, mostly from the Philox dropout and the activations
# in epilogues.
# 16-bit weights take 64-deep K steps, fp32 weights 32 (twice the bytes per tile). The
# interpreter gets small blocks because each program runs serially in numpy.
# OUT_BLOCK_M: the row tile of the [M, D] outputs of the up and dz kernels, whose programs walk
# only H: each loads all of W (H x its D block) and its rows of a or g, so W is read from L2 once
# per row tile and 128 rows halve what 64 re-read (the static model's l2_bytes: the H=256 bf16
# up kernel 537 -> 403 MB, the model's time unchanged, no spills; a pair's dz, with two W and two
# g tiles a step, spills at 128 and keeps 64).
_GPU = dict(BLOCK_M=64, BLOCK_N=128, BLOCK_H=128, GROUP_M=8, OUT_BLOCK_M=128)
_GPU_LAUNCH = dict(num_warps=8, num_stages=3)
_CPU = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_H=32, GROUP_M=4, OUT_BLOCK_M=32)


_EMPTY = (0,)


def launch_configs(target: Target, w_dtype: torch.dtype) -> tuple[dict, dict]:
    """(block sizes, launch options incl. the dot flags) for `target` and `w_dtype` adapter
    weights; BLOCK_K is the inner step of every GEMM."""
    if target.interpreter:
        return dict(_CPU, BLOCK_K=32), dot_flags(target)
    blocks = dict(_GPU, BLOCK_K=32 if w_dtype == torch.float32 else 64)
    return blocks, dict(_GPU_LAUNCH, **dot_flags(target))


_preset: str | None = None  # tile_preset's override of FASTPEFT_ADAPTER_TILES


@contextlib.contextmanager
def tile_preset(name: str):
    """Launches configured inside take the `name` tile preset ("narrow" or "wide", as
    FASTPEFT_ADAPTER_TILES), whatever the environment says: the GPU proof kit times both."""
    global _preset
    if name not in env.ADAPTER_TILE_PRESETS:
        raise ValueError(f"name must be one of {env.ADAPTER_TILE_PRESETS}, got {name!r}")
    saved, _preset = _preset, name
    try:
        yield
    finally:
        _preset = saved


def _widen(w_dtype: torch.dtype) -> int:
    """2 where the "wide" preset doubles the backward's H blocks and weight-gradient D blocks
    (16-bit weights; fp32 accumulators and tiles of that size spill), else 1.

    Why "wide": a program walks its whole reduction, so dpre reads dy once per H block, dW_up
    reads `a` once per D block and dy once per H block, dW_down likewise z and g. At H = 256 that
    is 4-8x their DRAM bytes from L2 (the static model's l2_bytes). Wider blocks halve those
    re-reads but leave half the programs, which the weight gradients make up with fixed-order
    partial sums (more DRAM bytes and a summing launch). The static model cannot weigh the two
    until a GPU has measured its L2 bandwidth, so "narrow" (the earlier tiles) stays the default
    and the proof kit times both."""
    preset = _preset or env.adapter_tiles()
    return 2 if preset == "wide" and w_dtype.itemsize == 2 else 1


def _h_block(H: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(H)))  # tl.dot needs >= 16


def _bits_args(keep: torch.Tensor, fallback: torch.Tensor) -> tuple:
    """(bits pointer, plane stride, row stride) of stored masks, or placeholders when the
    kernels draw them from the seeds (keep empty)."""
    if keep.numel() == 0:
        return fallback, 0, 0
    return keep, keep.stride(0), keep.stride(1)


def _down_step(step: int, block_h: int, pair: bool, w_dtype: torch.dtype) -> int:
    """The down kernel's K step: as wide as registers and shared memory allow without spilling
    (the static compile checks), since the dropout's per-step work spread over more elements a
    thread bounds this launch, not its bytes. 16-bit weights take twice the GEMMs' step up to a
    128-wide accumulator block (a pair's two 64-wide ones); fp32 weights the GEMMs' step (z is
    exact in TF32, so only the weight tile is split: kernels/_common.mma_widened). A 16-wide step
    would leave 64 rows x 2 Philox calls for 256 threads: each call run twice, 37 SASS a mask
    element against 11 at 32 wide (fp32 pair, H=256)."""
    accumulators = block_h * (2 if pair else 1)
    if w_dtype.itemsize == 2:
        return 2 * step if accumulators <= 128 else step
    return step


def _down(z, wd, wd2, pre, pre2, a, a2, seed, keep, p: float, activation: str) -> None:
    """pre = drop(z) W_downᵀ and a = act(pre) into pre and a (pre2, a2 for a pair's second
    adapter; a and a2 share pre's strides)."""
    M, D = z.shape
    H = wd.shape[0]
    cfg, options = launch_configs(target_for(z.device), wd.dtype)
    pair = wd2 is not None
    # One adapter with 16-bit weights: all of H <= 256 in one block, so z is read once. A pair,
    # or fp32 weights (whose 256-wide fp32 accumulator and act(pre) epilogue spilled on sm_90):
    # blocks of half the width; for H = 256 the second H block re-reads the z tiles the first
    # just read, from L2.
    wide = not pair and wd.dtype.itemsize == 2
    block_h = _h_block(H, 2 * cfg["BLOCK_H"] if wide else cfg["BLOCK_H"])
    block_d = _down_step(cfg["BLOCK_K"], block_h, pair, wd.dtype)
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(H, block_h),)
    bits, stride_bg, stride_bm = _bits_args(keep, pre)
    launch(
        kernels.adapter_down_kernel, grid,
        z, wd, wd2 if wd2 is not None else wd, pre, pre2 if pre2 is not None else pre,
        a, a2 if a2 is not None else a, seed if seed is not None else pre, bits,
        M, D, H, p,
        z.stride(0), z.stride(1), wd.stride(0), wd.stride(1), pre.stride(0), pre.stride(1),
        stride_bg, stride_bm,
        ACTIVATION=activation, PAIR=pair, HAS_DROPOUT=p > 0, STORE_BITS=keep.numel() > 0,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_D=block_d, BLOCK_H=block_h, **options,
    )  # fmt: skip


def _up(a, wu, residual, scaling: float) -> torch.Tensor:
    """out = residual + s · a W_upᵀ for a = act(pre) from the down kernel."""
    M, H = a.shape
    D = wu.shape[0]
    out = torch.empty((M, D), device=a.device, dtype=residual.dtype)
    cfg, options = launch_configs(target_for(a.device), wu.dtype)
    grid = (triton.cdiv(M, cfg["OUT_BLOCK_M"]) * triton.cdiv(D, cfg["BLOCK_N"]),)
    launch(
        kernels.adapter_up_kernel, grid,
        a, wu, residual, out,
        M, D, H, scaling,
        a.stride(0), a.stride(1), wu.stride(0), wu.stride(1),
        residual.stride(0), residual.stride(1), out.stride(0), out.stride(1),
        BLOCK_M=cfg["OUT_BLOCK_M"], BLOCK_D=cfg["BLOCK_N"], BLOCK_H=_h_block(H, cfg["BLOCK_K"]),
        GROUP_M=cfg["GROUP_M"], **options,
    )  # fmt: skip
    return out


def _dpre(dy, wu, pre, g, a, scaling: float, activation: str) -> None:
    """g = s · (dy W_up) ⊙ act'(pre) and a = act(pre), written into g and a ([M, H] views)."""
    M, H = pre.shape
    D = wu.shape[0]
    cfg, options = launch_configs(target_for(dy.device), wu.dtype)
    block_h = _h_block(H, _widen(wu.dtype) * cfg["BLOCK_H"])
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(H, block_h),)
    launch(
        kernels.adapter_dpre_kernel, grid,
        dy, wu, pre, g, a,
        M, D, H, scaling,
        dy.stride(0), dy.stride(1), wu.stride(0), wu.stride(1), pre.stride(0), pre.stride(1),
        g.stride(0), g.stride(1),
        ACTIVATION=activation, BLOCK_M=cfg["BLOCK_M"], BLOCK_D=cfg["BLOCK_K"], BLOCK_H=block_h,
        **options,
    )  # fmt: skip


def _splits_over_m(target, M: int, block_m: int, programs: int, streamed: int,
                   partial: int) -> tuple[int, int]:  # fmt: skip
    """(rows per split, splits) of a weight gradient's reduction over M for a launch of
    `programs` output tiles. Splits are for SMs the tiles leave idle: among 1 and up to twice
    the splits that cover the SMs once, the count whose last round of one CTA per SM is fullest
    (the fewest on a tie), kept only where it covers at least 10% more of the GPU than one split
    (partials to write and sum, for occupancy alone, do not pay: dW at H = 256 is 128 tiles on
    132 SMs), and capped so that the fp32 partials (`partial` bytes per split) cost at most half
    of the `streamed` bytes. The interpreter takes two splits, so the CPU tests run the partial
    sums."""
    blocks = triton.cdiv(M, block_m)
    sms = target.sm_count

    def busy(n: int) -> float:  # the share of the SMs a grid of programs * n keeps busy
        rounds = programs * n / sms
        return rounds / math.ceil(rounds)

    if target.interpreter:
        splits = 2
    else:
        least = triton.cdiv(sms, programs)
        cap = max(1, streamed // (4 * partial))
        more = [n for n in range(2, 2 * least + 1) if n <= cap]
        best = max(more, key=lambda n: (busy(n), -n), default=1)
        splits = best if busy(best) >= 1.1 * busy(1) else 1
    per = triton.cdiv(blocks, min(splits, blocks))
    return per * block_m, triton.cdiv(blocks, per)


def _gradient_slots(weight: torch.Tensor, splits: int) -> torch.Tensor:
    """Where a weight-gradient kernel writes: the gradient itself for one split, else fp32
    partials [splits, *weight.shape] (summed in split order by `_gradient`)."""
    if splits == 1:
        return torch.empty_like(weight, memory_format=torch.contiguous_format)
    return torch.empty((splits, *weight.shape), device=weight.device, dtype=torch.float32)


def _gradient(slots: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return slots if slots.dim() == weight.dim() else sum_partials(slots, weight.dtype)


def _split_stride(slots: torch.Tensor, weight: torch.Tensor) -> int:
    return slots.stride(0) if slots.dim() > weight.dim() else 0


def _dw_up(dy, a, w_up, scaling: float) -> torch.Tensor:
    M, H = a.shape
    D = w_up.shape[0]
    target = target_for(dy.device)
    cfg, options = launch_configs(target, w_up.dtype)
    widen = _widen(w_up.dtype)
    block_h = _h_block(H, widen * cfg["BLOCK_H"])
    # 64-wide D blocks ("narrow"): dW_up is small ([D, H]), so narrow tiles give enough programs.
    block_d, block_m = widen * cfg["BLOCK_M"], cfg["BLOCK_K"]
    tiles = triton.cdiv(D, block_d) * triton.cdiv(H, block_h)
    rows, splits = _splits_over_m(target, M, block_m, tiles,
                                  M * (D * dy.element_size() + H * a.element_size()),
                                  4 * D * H)  # fmt: skip
    slots = _gradient_slots(w_up, splits)
    grid = (triton.cdiv(D, block_d), triton.cdiv(H, block_h), splits)
    launch(
        kernels.adapter_dw_up_kernel, grid,
        dy, a, slots,
        M, D, H, scaling, rows,
        dy.stride(0), dy.stride(1), a.stride(0), a.stride(1), _split_stride(slots, w_up),
        slots.stride(-2), slots.stride(-1),
        BLOCK_M=block_m, BLOCK_D=block_d, BLOCK_H=block_h, **options,
    )  # fmt: skip
    return _gradient(slots, w_up)


def _dw_down(z, g, g2, seed, keep, w_down, p: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    M, D = z.shape
    H = w_down.shape[0]
    target = target_for(z.device)
    cfg, options = launch_configs(target, w_down.dtype)
    # The GEMMs' K step over M, and 128-high H blocks: each H block re-walks all of z (its loads,
    # its masks' bits, its conversion for the product), so the fewer and the deeper the steps,
    # the fewer instructions a z element (sm_90 compiles, H=256: fp32 pair 333 -> 112 SASS per
    # z element, bf16 single 33 -> 28; no spills).
    pair = g2 is not None
    widen = 1 if pair else _widen(w_down.dtype)  # a pair's two wide accumulators do not compile
    block_h = _h_block(H, widen * cfg["BLOCK_H"])
    block_m, block_d = cfg["BLOCK_K"], widen * cfg["BLOCK_M"]
    tiles = triton.cdiv(H, block_h) * triton.cdiv(D, block_d)
    count = 2 if pair else 1
    rows, splits = _splits_over_m(target, M, block_m, tiles,
                                  M * (D * z.element_size() + count * H * g.element_size()),
                                  4 * count * D * H)  # fmt: skip
    slots = _gradient_slots(w_down, splits)
    slots2 = _gradient_slots(w_down, splits) if pair else slots
    bits, stride_bg, stride_bm = _bits_args(keep, g)
    launch(
        kernels.adapter_dw_down_kernel, (triton.cdiv(H, block_h), triton.cdiv(D, block_d), splits),
        z, g, g2 if pair else g, seed if seed is not None else g, bits, slots, slots2,
        M, D, H, p, rows,
        z.stride(0), z.stride(1), g.stride(0), g.stride(1), _split_stride(slots, w_down),
        slots.stride(-2), slots.stride(-1), stride_bg, stride_bm,
        PAIR=pair, HAS_DROPOUT=p > 0, FROM_BITS=keep.numel() > 0, BLOCK_M=block_m,
        BLOCK_D=block_d, BLOCK_H=block_h, **options,
    )  # fmt: skip
    return _gradient(slots, w_down), (_gradient(slots2, w_down) if pair else None)


def _dz(g, g2, wd, wd2, dys, seed, keep, z, p: float) -> torch.Tensor:
    """drop'(g W_down) [+ drop2'(g2 W_down2)] + Σ dys, rounded once to z's dtype."""
    M, D = z.shape
    H = wd.shape[0]
    dz = torch.empty((M, D), device=z.device, dtype=z.dtype)
    cfg, options = launch_configs(target_for(z.device), wd.dtype)
    pair = g2 is not None
    block_m = cfg["BLOCK_M"] if pair else cfg["OUT_BLOCK_M"]
    grid = (triton.cdiv(M, block_m) * triton.cdiv(D, cfg["BLOCK_N"]),)
    dy1 = dys[0] if dys else dz
    dy2 = dys[1] if len(dys) > 1 else dy1
    bits, stride_bg, stride_bm = _bits_args(keep, g)
    launch(
        kernels.adapter_dz_kernel, grid,
        g, g2 if pair else g, wd, wd2 if pair else wd, dy1, dy2, seed if seed is not None else g,
        bits, dz,
        M, D, H, p,
        g.stride(0), g.stride(1), wd.stride(0), wd.stride(1), dy1.stride(0), dy1.stride(1),
        dy2.stride(0), dy2.stride(1), dz.stride(0), dz.stride(1), stride_bg, stride_bm,
        PAIR=pair, NUM_DY=len(dys), HAS_DROPOUT=p > 0, FROM_BITS=keep.numel() > 0,
        BLOCK_M=block_m, BLOCK_D=cfg["BLOCK_N"], BLOCK_H=_h_block(H, cfg["BLOCK_K"]),
        GROUP_M=cfg["GROUP_M"], **options,
    )  # fmt: skip
    return dz


def _same_strides(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # The pair kernels address both adapters' weights with one set of strides.
    if a.stride() == b.stride():
        return a, b
    return a.contiguous(), b.contiguous()


def forward(z, w_down, w_up, residual, seed, scaling: float, p: float, activation: str):
    """(out, pre, keep) for 2-D z: out = residual + s·act(drop(z) W_downᵀ) W_upᵀ (residual z if
    None); keep holds the mask's bits ([1, M, ceil(D / 8)] uint8), or is empty when the backward
    draws it again (FASTPEFT_DROPOUT_MASK=regenerate, or no dropout)."""
    M, H = z.shape[0], w_down.shape[0]
    # pre is kept in the adapter dtype: the reference rounds it there before act (so do we), it
    # is fp32 anyway for PEFT-style fp32 adapters, and 16-bit adapters save half the bytes.
    pre = torch.empty((M, H), device=z.device, dtype=w_down.dtype)
    keep = _stored_masks(z, p, 1)
    if M == 0:
        return torch.empty_like(z if residual is None else residual), pre, keep
    a = torch.empty_like(pre)  # act(pre), for the up kernel only
    _down(z, w_down, None, pre, None, a, None, seed, keep, p, activation)
    out = _up(a, w_up, z if residual is None else residual, scaling)
    return out, pre, keep


def backward(dy, z, w_down, w_up, pre, keep, seed, scaling, p, activation, residual_is_z, need_dz):
    """(dz or None, dW_down, dW_up) for 2-D dy/z; dz includes dy when the residual is z. The
    forward's mask comes from `keep` (its bits), or from `seed` when `keep` is empty."""
    M, H = pre.shape
    if M == 0:
        dz = torch.empty_like(z) if need_dz else None
        return dz, torch.zeros_like(w_down), torch.zeros_like(w_up)
    g = torch.empty((M, H), device=z.device, dtype=w_down.dtype)
    a = torch.empty_like(g)
    _dpre(dy, w_up, pre, g, a, scaling, activation)
    d_w_up = _dw_up(dy, a, w_up, scaling)
    del a
    d_w_down, _ = _dw_down(z, g, None, seed, keep, w_down, p)
    dz = None
    if need_dz:
        dz = _dz(g, None, w_down, None, (dy,) if residual_is_z else (), seed, keep, z, p)
    return dz, d_w_down, d_w_up


def forward_pair(x, w_down_1, w_up_1, w_down_2, w_up_2, seed, scaling, p, activation):
    """(u, v, pre, keep) for 2-D x; pre [M, 2H] holds both bottleneck activations side by side;
    keep the two masks' bits ([2, M, ceil(D / 8)]), or empty (as in `forward`)."""
    M, H = x.shape[0], w_down_1.shape[0]
    pre = torch.empty((M, 2 * H), device=x.device, dtype=w_down_1.dtype)
    keep = _stored_masks(x, p, 2)
    if M == 0:
        return torch.empty_like(x), torch.empty_like(x), pre, keep
    w_down_1, w_down_2 = _same_strides(w_down_1, w_down_2)
    a = torch.empty_like(pre)  # act(pre) of both, for the up kernels only
    _down(x, w_down_1, w_down_2, pre[:, :H], pre[:, H:], a[:, :H], a[:, H:], seed, keep, p,
          activation)  # fmt: skip
    u = _up(a[:, :H], w_up_1, x, scaling)
    v = _up(a[:, H:], w_up_2, x, scaling)
    return u, v, pre, keep


def backward_pair(du, dv, x, w_down_1, w_up_1, w_down_2, w_up_2, pre, keep, seed, scaling, p,
                  activation, need_dx):  # fmt: skip
    """(dx or None, dW_down_1, dW_up_1, dW_down_2, dW_up_2); dx includes du + dv."""
    M, H = x.shape[0], w_down_1.shape[0]
    if M == 0:
        grads = [torch.zeros_like(w) for w in (w_down_1, w_up_1, w_down_2, w_up_2)]
        return (torch.empty_like(x) if need_dx else None), *grads
    g = torch.empty((M, 2 * H), device=x.device, dtype=w_down_1.dtype)
    a = torch.empty_like(g)
    _dpre(du, w_up_1, pre[:, :H], g[:, :H], a[:, :H], scaling, activation)
    _dpre(dv, w_up_2, pre[:, H:], g[:, H:], a[:, H:], scaling, activation)
    d_w_up_1 = _dw_up(du, a[:, :H], w_up_1, scaling)
    d_w_up_2 = _dw_up(dv, a[:, H:], w_up_2, scaling)
    del a
    d_w_down_1, d_w_down_2 = _dw_down(x, g[:, :H], g[:, H:], seed, keep, w_down_1, p)
    dx = None
    if need_dx:
        w_down_1, w_down_2 = _same_strides(w_down_1, w_down_2)
        dx = _dz(g[:, :H], g[:, H:], w_down_1, w_down_2, (du, dv), seed, keep, x, p)
    return dx, d_w_down_1, d_w_up_1, d_w_down_2, d_w_up_2


def mask_spec(z: torch.Tensor, p: float, count: int) -> tuple[tuple[int, ...], torch.dtype]:
    """(shape, dtype) of the masks `forward` (count 1) or `forward_pair` (2) return for z:
    [count, M, ceil(D / 8)] uint8, 1 bit per element, when dropout is on and
    FASTPEFT_DROPOUT_MASK is "bits" (the default; the backward kernels read them, at a few
    instructions an element against a Philox draw in each), else empty (drawn again)."""
    if p > 0 and env.dropout_mask_mode() == "bits":
        return (count, z.shape[0], triton.cdiv(z.shape[1], 8)), torch.uint8
    return _EMPTY, torch.uint8


def _stored_masks(z: torch.Tensor, p: float, count: int) -> torch.Tensor:
    shape, dtype = mask_spec(z, p, count)
    return torch.empty(shape, device=z.device, dtype=dtype)


def activation_and_grad(x: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(act(x), act'(x)) as the kernels compute them, for a contiguous fp32 x (tests only)."""
    y, dydx = torch.empty_like(x), torch.empty_like(x)
    block = 4096
    grid = (triton.cdiv(x.numel(), block),)
    launch(
        kernels.adapter_activation_kernel, grid, x, y, dydx, x.numel(),
        ACTIVATION=activation, BLOCK=block,
    )  # fmt: skip
    return y, dydx
