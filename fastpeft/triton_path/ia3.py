"""Host side of the Triton IA3 kernels (backend "triton"): configs, allocation, launches.

Same signatures as the PyTorch path (fastpeft/torch_path/ia3.py), on 2-D inputs.
"""

import torch
import triton

from ..kernels import ia3 as kernels
from .launch import Target, dot_flags, launch, target_for

# GPU tiles for Hopper, as LoRA's (fastpeft/triton_path/lora_plan.py): 128 x 256 output tiles
# on 8 warps (two warpgroups of wgmma), 4 stages of 64-wide steps along the reduction, for the
# forward GEMMs ([M, N] outputs) and the backward ones ([M, K] outputs, stepping along N). The
# kernels that scale an operand in registers (x in the input case's forward, dy in the output
# case's backward) stage the scaled tile again for the dot, so they keep 3 stages (the sm_90
# compile check measures each: 4 would pass 227 KiB). The input case's backward writes dx and
# reads x for dl in its epilogue: at 256 columns that epilogue spilled (320 bytes), at 128 it
# does not. A 4-byte base halves the step. The dl
# programs of the output case's backward read [128, 128] tiles of dy and z. The interpreter gets
# small blocks because each program runs serially in numpy.
_GPU_FWD = dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4)
_GPU_BWD = dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=256, GROUP_M=8, num_warps=8, num_stages=4)
_CPU_GEMM = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=4)
_GPU_REDUCE = dict(BLOCK_M=128, BLOCK_N=128, num_warps=8)
_CPU_REDUCE = dict(BLOCK_M=32, BLOCK_N=32)


def _gemm_config(target: Target, dtype: torch.dtype, forward: bool, feedforward: bool) -> dict:
    """GEMM tiles for a `dtype` base: the forward steps along K, the backward along N."""
    if target.interpreter:
        return dict(_CPU_GEMM)
    cfg = dict(_GPU_FWD if forward else _GPU_BWD)
    if forward == feedforward:  # x (input case) or dy (output case) scaled in registers
        cfg["num_stages"] -= 1
    if feedforward and not forward:  # the dx ⊙ l and dl epilogue
        cfg["BLOCK_K"] //= 2
    if dtype.itemsize == 4:
        cfg["BLOCK_K" if forward else "BLOCK_N"] //= 2
    return cfg


def launch_configs(target: Target, dtype: torch.dtype, feedforward: bool = False) -> dict:
    """Every launch's configuration for `target`, a `dtype` base and the IA3 case (`feedforward`:
    input scaling): "fwd" and "bwd" (the GEMMs), "reduce" (the dl partials' tiles) and the dot
    "flags"."""
    reduce = dict(_CPU_REDUCE if target.interpreter else _GPU_REDUCE)
    fwd = _gemm_config(target, dtype, True, feedforward)
    bwd = _gemm_config(target, dtype, False, feedforward)
    return dict(fwd=fwd, bwd=bwd, reduce=reduce, flags=dot_flags(target))


def reduce_partials(partials: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # A sum over dim 0 of a dense fp32 tensor: a fixed reduction order, so dl is deterministic.
    return partials.sum(dim=0).to(dtype)


def forward(x, weight, bias, ia3_l, feedforward: bool, save_z: bool):
    """(y, z) for 2-D x; z = x Wᵀ + b (base dtype) in the output case with save_z, else None."""
    M, K = x.shape
    N = weight.shape[0]
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    cfgs = launch_configs(target_for(x.device), x.dtype, feedforward)
    cfg, flags = cfgs["fwd"], cfgs["flags"]
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
    bias_arg = bias if bias is not None else weight
    if feedforward:
        launch(
            kernels.ia3_in_fwd_kernel, grid,
            x, weight, bias_arg, ia3_l, y,
            M, N, K,
            x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), y.stride(0), y.stride(1),
            HAS_BIAS=bias is not None, **flags, **cfg,
        )  # fmt: skip
        return y, None
    z = torch.empty((M, N), device=x.device, dtype=x.dtype) if save_z else None
    z_arg = z if z is not None else y
    launch(
        kernels.ia3_out_fwd_kernel, grid,
        x, weight, bias_arg, ia3_l, y, z_arg,
        M, N, K,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), y.stride(0), y.stride(1),
        z_arg.stride(0), z_arg.stride(1),
        HAS_BIAS=bias is not None, STORE_Z=save_z, **flags, **cfg,
    )  # fmt: skip
    return y, z


def _backward_output(dy, z, weight, ia3_l, need_dx: bool, need_dl: bool):
    M, N = dy.shape
    K = weight.shape[1]
    cfgs = launch_configs(target_for(dy.device), dy.dtype, feedforward=False)
    red = cfgs["reduce"]
    partials = None
    if need_dl:
        partials = torch.empty(
            (triton.cdiv(M, red["BLOCK_M"]), N), device=dy.device, dtype=torch.float32
        )
    if not need_dx:  # no dx GEMM to run beside: the dl partials alone
        grid = (partials.shape[0], triton.cdiv(N, red["BLOCK_N"]))
        launch(
            kernels.ia3_out_dl_kernel, grid,
            dy, z, partials,
            M, N,
            dy.stride(0), dy.stride(1), z.stride(0), z.stride(1),
            partials.stride(0), partials.stride(1),
            **red,
        )  # fmt: skip
        return None, reduce_partials(partials, ia3_l.dtype)
    cfg = cfgs["bwd"]
    dx = torch.empty((M, K), device=dy.device, dtype=dy.dtype)
    # One launch: the dl programs (if any) first, then the dx GEMM's tiles.
    dl_programs = partials.shape[0] * triton.cdiv(N, red["BLOCK_N"]) if need_dl else 0
    part_arg = partials if need_dl else dx  # never touched without dl programs
    z_arg = z if need_dl else dy
    grid = (dl_programs + triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(K, cfg["BLOCK_K"]),)
    launch(
        kernels.ia3_out_bwd_kernel, grid,
        dy, weight, ia3_l, z_arg, dx, part_arg,
        M, N, K, dl_programs,
        dy.stride(0), dy.stride(1), weight.stride(0), weight.stride(1),
        z_arg.stride(0), z_arg.stride(1), dx.stride(0), dx.stride(1),
        part_arg.stride(0), part_arg.stride(1),
        **cfgs["flags"], **cfg, DL_BLOCK_M=red["BLOCK_M"], DL_BLOCK_N=red["BLOCK_N"],
    )  # fmt: skip
    return dx, (reduce_partials(partials, ia3_l.dtype) if need_dl else None)


def _backward_input(dy, x, weight, ia3_l, need_dx: bool, need_dl: bool):
    M, N = dy.shape
    K = weight.shape[1]
    cfgs = launch_configs(target_for(dy.device), dy.dtype, feedforward=True)
    cfg = cfgs["bwd"]
    dx = torch.empty((M, K), device=dy.device, dtype=dy.dtype) if need_dx else None
    num_m_blocks = triton.cdiv(M, cfg["BLOCK_M"])
    partials = None
    if need_dl:
        partials = torch.empty((num_m_blocks, K), device=dy.device, dtype=torch.float32)
    dx_arg = dx if dx is not None else dy
    part_arg = partials if partials is not None else dx_arg
    grid = (num_m_blocks * triton.cdiv(K, cfg["BLOCK_K"]),)
    launch(
        kernels.ia3_in_bwd_kernel, grid,
        dy, weight, x, ia3_l, dx_arg, part_arg,
        M, N, K,
        dy.stride(0), dy.stride(1), weight.stride(0), weight.stride(1), x.stride(0), x.stride(1),
        dx_arg.stride(0), dx_arg.stride(1), part_arg.stride(0), part_arg.stride(1),
        NEED_DX=need_dx, NEED_DL=need_dl, **cfgs["flags"], **cfg,
    )  # fmt: skip
    dl = reduce_partials(partials, ia3_l.dtype) if need_dl else None
    return dx, dl


def backward(dy, saved, weight, ia3_l, feedforward: bool, need_dx: bool, need_dl: bool):
    """(dx or None, dl or None) for 2-D dy; `saved` is x (input case) or z (output case)."""
    if not (need_dx or need_dl):
        return None, None
    if feedforward:
        return _backward_input(dy, saved, weight, ia3_l, need_dx, need_dl)
    return _backward_output(dy, saved, weight, ia3_l, need_dx, need_dl)
