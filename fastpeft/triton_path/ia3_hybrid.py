"""IA3's hybrid path (backend "hybrid"): the frozen base products through cuBLAS, the scale and the
dl reduction in one Triton side kernel (kernels/ia3_side.py) per step.

    output case                            input case
    z  = F.linear(x, W, b)      cuBLAS     xs = x ⊙ l                 side kernel
    y  = z ⊙ l                  side       y  = F.linear(xs, W, b)    cuBLAS
    ds = dy ⊙ l, dl partials    side       g  = dy W                  cuBLAS
    dx = ds W                   cuBLAS     dx = g ⊙ l, dl partials    side

Every rounding is PEFT's (and the fused path's): z, x ⊙ l, dy ⊙ l and g in the base dtype. It
keeps what the fused path keeps (z or x) and writes one base-dtype temporary per step (y's z, xs,
ds, g), freed at once. Against the fused path it pays one extra pass over an [M, N] or [M, K]
tensor per step and gains cuBLAS's GEMMs: `backend="auto"` times both on a GPU
(fastpeft/triton_path/ia3_race.py) and keeps the faster per shape.

Why not a scaled copy of W (y = x (diag(l) W)ᵀ + b ⊙ l, dx = dy (diag(l) W))? It would replace
the per-step pass over [M, N] by one over W ([N, K], remade every step since l trains, and kept
for the backward: N·K more bytes per layer), but dl = Σ_m dy ⊙ z needs z, which that GEMM no
longer produces: recovering it as y / l is inexact and undefined where l = 0, recomputing it is a
second GEMM. It also rounds W ⊙ l, a point PEFT never rounds at.
"""

import torch
import torch.nn.functional as F
import triton

from ..kernels import ia3_side as kernels
from .ia3 import launch_configs, reduce_partials
from .launch import launch, target_for
from .waves import wave_ctas


def _side(src, ia3_l, other=None, store_out: bool = True):
    """(src ⊙ l in src's dtype or None, fp32 partials of Σ src ⊙ other or None)."""
    M, C = src.shape
    target = target_for(src.device)
    red = launch_configs(target, src.dtype)["reduce"]
    block_m, block_c = red["BLOCK_M"], red["BLOCK_N"]
    if not target.interpreter:  # narrow outputs (k/v with GQA): shorter tiles fill a wave
        slots = wave_ctas(target, red["num_warps"])
        while block_m > 16 and triton.cdiv(M, block_m) * triton.cdiv(C, block_c) < slots:
            block_m //= 2
    out = torch.empty_like(src) if store_out else None
    partials = None
    if other is not None:
        partials = torch.empty((triton.cdiv(M, block_m), C), device=src.device, dtype=torch.float32)
    out_arg = out if out is not None else src  # never written without STORE_OUT
    other_arg = other if other is not None else src
    part_arg = partials if partials is not None else src  # never written without NEED_DL
    launch(
        kernels.ia3_scale_kernel, (triton.cdiv(M, block_m), triton.cdiv(C, block_c)),
        src, ia3_l, out_arg, other_arg, part_arg,
        M, C,
        src.stride(0), src.stride(1), out_arg.stride(0), out_arg.stride(1),
        other_arg.stride(0), other_arg.stride(1), part_arg.stride(0), part_arg.stride(1),
        STORE_OUT=store_out, NEED_DL=other is not None,
        BLOCK_M=block_m, BLOCK_C=block_c, **{k: v for k, v in red.items() if k == "num_warps"},
    )  # fmt: skip
    return out, partials


def forward(x, weight, bias, ia3_l, feedforward: bool, save_z: bool):
    """(y, z), as the fused path's `forward`."""
    if feedforward:
        xs, _ = _side(x, ia3_l)
        return F.linear(xs, weight, bias), None
    z = F.linear(x, weight, bias)
    y, _ = _side(z, ia3_l)
    return y, (z if save_z else None)


def backward(dy, saved, weight, ia3_l, feedforward: bool, need_dx: bool, need_dl: bool):
    """(dx or None, dl or None), as the fused path's `backward`."""
    if not (need_dx or need_dl):
        return None, None
    if feedforward:  # saved is x
        g = dy @ weight
        dx, partials = _side(g, ia3_l, saved if need_dl else None, store_out=need_dx)
    else:  # saved is z
        scaled, partials = _side(dy, ia3_l, saved if need_dl else None, store_out=need_dx)
        dx = scaled @ weight if need_dx else None
    return dx, (reduce_partials(partials, ia3_l.dtype) if need_dl else None)
