"""Host side of the Triton IA3 kernels (backend "triton"): configs, allocation, launches.

Same signatures as the PyTorch path (fastpeft/torch_path/ia3.py), on 2-D inputs.
"""

import torch
import triton

from ..kernels import ia3 as kernels
from .launch import Target, dot_flags, launch, target_for

# NOTE: untuned starting points (no GPU was available when these were written), the same GEMM
# tiles as the LoRA kernels; the interpreter gets small blocks because each program runs serially
# in numpy. An fp32 base halves the reduction step (K in the forward GEMMs, N in the backward
# ones): with the 16-bit tiles, ia3_out_bwd_kernel needed 257 KiB of shared memory on sm_90 (the
# limit is 227 KiB; its dy tiles are scaled in registers and staged again for the dot), found by
# the GPU-less compile check tests/kernels/compile_sm90.py.
_GPU_GEMM = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)
_CPU_GEMM = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=4)
_GPU_REDUCE = dict(BLOCK_M=64, BLOCK_N=128, num_warps=4)
_CPU_REDUCE = dict(BLOCK_M=32, BLOCK_N=32)


def _gemm_config(target: Target, dtype: torch.dtype, reduction: str) -> dict:
    """GEMM tiles for a `dtype` base; `reduction` names the block the GEMM steps along
    ("BLOCK_K" forward, "BLOCK_N" backward), halved on a GPU for 4-byte tiles."""
    if target.interpreter:
        return dict(_CPU_GEMM)
    cfg = dict(_GPU_GEMM)
    if dtype.itemsize == 4:
        cfg[reduction] //= 2
    return cfg


def launch_configs(target: Target, dtype: torch.dtype) -> dict[str, dict]:
    """Every launch's configuration for `target` and a `dtype` base: "fwd" and "bwd" (the GEMMs),
    "reduce" (the dl column reduction without dx) and the dot "flags"."""
    reduce = dict(_CPU_REDUCE if target.interpreter else _GPU_REDUCE)
    fwd, bwd = _gemm_config(target, dtype, "BLOCK_K"), _gemm_config(target, dtype, "BLOCK_N")
    return dict(fwd=fwd, bwd=bwd, reduce=reduce, flags=dot_flags(target))


def _reduce_partials(partials: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # A sum over dim 0 of a dense fp32 tensor: a fixed reduction order, so dl is deterministic.
    return partials.sum(dim=0).to(dtype)


def forward(x, weight, bias, ia3_l, feedforward: bool, save_z: bool):
    """(y, z) for 2-D x; z = x Wᵀ + b (base dtype) in the output case with save_z, else None."""
    M, K = x.shape
    N = weight.shape[0]
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    cfgs = launch_configs(target_for(x.device), x.dtype)
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
    cfgs = launch_configs(target_for(dy.device), dy.dtype)
    if not need_dx:  # no dx GEMM to carry the dl partials: a plain two-stage column reduction
        red = cfgs["reduce"]
        partials = torch.empty(
            (triton.cdiv(M, red["BLOCK_M"]), N), device=dy.device, dtype=torch.float32
        )
        grid = (partials.shape[0], triton.cdiv(N, red["BLOCK_N"]))
        launch(
            kernels.ia3_out_dl_kernel, grid,
            dy, z, partials,
            M, N,
            dy.stride(0), dy.stride(1), z.stride(0), z.stride(1),
            partials.stride(0), partials.stride(1),
            **red,
        )  # fmt: skip
        return None, _reduce_partials(partials, ia3_l.dtype)
    cfg = cfgs["bwd"]
    num_m_blocks = triton.cdiv(M, cfg["BLOCK_M"])
    dx = torch.empty((M, K), device=dy.device, dtype=dy.dtype)
    partials = dx  # placeholder pointer; never touched when NEED_DL is False
    if need_dl:
        partials = torch.empty((num_m_blocks, N), device=dy.device, dtype=torch.float32)
    z_arg = z if need_dl else dy
    grid = (num_m_blocks * triton.cdiv(K, cfg["BLOCK_K"]),)
    launch(
        kernels.ia3_out_bwd_kernel, grid,
        dy, weight, ia3_l, z_arg, dx, partials,
        M, N, K,
        dy.stride(0), dy.stride(1), weight.stride(0), weight.stride(1),
        z_arg.stride(0), z_arg.stride(1), dx.stride(0), dx.stride(1),
        partials.stride(0), partials.stride(1),
        NEED_DL=need_dl, **cfgs["flags"], **cfg,
    )  # fmt: skip
    return dx, (_reduce_partials(partials, ia3_l.dtype) if need_dl else None)


def _backward_input(dy, x, weight, ia3_l, need_dx: bool, need_dl: bool):
    M, N = dy.shape
    K = weight.shape[1]
    cfgs = launch_configs(target_for(dy.device), dy.dtype)
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
    dl = _reduce_partials(partials, ia3_l.dtype) if need_dl else None
    return dx, dl


def backward(dy, saved, weight, ia3_l, feedforward: bool, need_dx: bool, need_dl: bool):
    """(dx or None, dl or None) for 2-D dy; `saved` is x (input case) or z (output case)."""
    if not (need_dx or need_dl):
        return None, None
    if feedforward:
        return _backward_input(dy, saved, weight, ia3_l, need_dx, need_dl)
    return _backward_output(dy, saved, weight, ia3_l, need_dx, need_dl)
