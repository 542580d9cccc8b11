"""Triton kernels of the fused optimizers: SpiderAdamW's pass (AdamW's update and SPIDER's
blend in one pass) and MagnitudeMaskAdamW's (AdamW's update with the pinned elements at θ₀).

Runs after SPIDER's passes 1 and 2 (kernels/importance.py: G += g with the moments of G, then
the select sums), over the same chunk tables: one program per CHUNK-element chunk of one tensor.
Each operand list comes as a typed base pointer (its first tensor) and a table of element offsets
from it (``table[t]``: tensor t's data pointer minus the base, in elements), not as raw
addresses: an address loaded from a table carries no alignment facts, while a pointer argument
is specialised as 16-byte aligned by Triton and the offsets can be hinted. Per element, in fp32::

    m ← m + (1 − β₁)(g − m);  v ← β₂ v + (1 − β₂) g²;  x ← w (1 − lr·λ) − (lr/bc₁) m / (√v/√bc₂ + ε)
    w ← θ₀ + min(c_raw · inv_m, 1) (x − θ₀) on a tensor with a selected element, else w ← x

so w, m and v are read and written once, g, θ₀ and G read once, and x is rounded once.

Vector loads as in SPIDER's passes (kernels/importance.py, whose chunk and block helpers this
uses): a full chunk of 16-byte-aligned tensors streams with unmasked 16-byte loads; only a
tensor's last chunk, if partial, takes the masked loop.
"""

import triton
import triton.language as tl

from .importance import (
    _c_raw,
    _chunk,
    _inverse_mean,
    _operand,
    _r_stats,
    block_offsets,
    load_f32,
    store_as,
)

# (1 − lr·λ, lr / bc₁, β₁, β₂, ε, √bc₂), one float64 row per tensor. A tl.constexpr: the GPU
# compiler rejects a plain int global that the interpreter accepts.
HYPER_COLUMNS = tl.constexpr(6)


@triton.jit
def _hyper(hyper_ptr, t):
    """Tensor t's AdamW scalars in fp32: (1 − lr·λ, lr / bc₁, β₁, β₂, ε, √bc₂)."""
    h = hyper_ptr + HYPER_COLUMNS * t
    return (
        tl.load(h).to(tl.float32),
        tl.load(h + 1).to(tl.float32),
        tl.load(h + 2).to(tl.float32),
        tl.load(h + 3).to(tl.float32),
        tl.load(h + 4).to(tl.float32),
        tl.load(h + 5).to(tl.float32),
    )


@triton.jit
def _adamw(w, g, m, v, offs, n, h_decay, h_step, h_b1, h_b2, h_eps, h_bc2, MASKED: tl.constexpr):
    """AdamW at offs: m and v updated and stored, w's new value returned in fp32 (not stored)."""
    gv = load_f32(g, offs, n, MASKED)
    mv = load_f32(m, offs, n, MASKED)
    vv = load_f32(v, offs, n, MASKED)
    x = load_f32(w, offs, n, MASKED)
    mv = mv + (1.0 - h_b1) * (gv - mv)
    vv = vv * h_b2 + (1.0 - h_b2) * (gv * gv)
    store_as(m, offs, n, mv, MASKED)
    store_as(v, offs, n, vv, MASKED)
    return x * h_decay - h_step * (mv / (tl.sqrt_rn(vv) / h_bc2 + h_eps))


@triton.jit
def _fused_block(
    w, g, m, v, t0, G, start, i, n, h_decay, h_step, h_b1, h_b2, h_eps, h_bc2,
    pm, ps, pz, fm, fs, fz, inv_m, active, BLOCK: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    """One BLOCK of the pass at start + i (masked by n only when MASKED)."""
    offs = block_offsets(start, i, BLOCK, MASKED)
    x = _adamw(w, g, m, v, offs, n, h_decay, h_step, h_b1, h_b2, h_eps, h_bc2, MASKED)
    if active:
        a = load_f32(t0, offs, n, MASKED)
        c, _ = _c_raw(a, load_f32(G, offs, n, MASKED), pm, ps, pz, fm, fs, fz, offs < n)
        x = a + tl.minimum(c * inv_m, 1.0) * (x - a)
    store_as(w, offs, n, x, MASKED)


@triton.jit
def spider_adamw_blend_kernel(
    w_base, g_base, m_base, v_base, t0_base, G_base,
    w_table, g_table, m_table, v_table, t0_table, G_table,
    chunk_tensor_ptr, chunk_start_ptr, numel_ptr, hyper_ptr, pre_ptr, ft_ptr, sel_ptr,
    ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Program = one chunk of one tensor t: the fused AdamW + blend pass over it. hyper[t] holds
    t's AdamW scalars; sel[t] = (Σ c_raw, count) decides the blend (none when count is 0)."""
    t, start, n, full = _chunk(chunk_tensor_ptr, chunk_start_ptr, numel_ptr, CHUNK)
    w = _operand(w_base, w_table, t, ALIGNED)
    g = _operand(g_base, g_table, t, ALIGNED)
    m = _operand(m_base, m_table, t, ALIGNED)
    v = _operand(v_base, v_table, t, ALIGNED)
    t0 = _operand(t0_base, t0_table, t, ALIGNED)
    G = _operand(G_base, G_table, t, ALIGNED)
    h_decay, h_step, h_b1, h_b2, h_eps, h_bc2 = _hyper(hyper_ptr, t)
    pm, ps, pz = _r_stats(pre_ptr, t)
    fm, fs, fz = _r_stats(ft_ptr, t)
    inv_m, active = _inverse_mean(sel_ptr, t)
    if full:  # no masks, so the loads can be vectorised
        for i in range(0, CHUNK, BLOCK):
            _fused_block(
                w, g, m, v, t0, G, start, i, n, h_decay, h_step, h_b1, h_b2, h_eps, h_bc2,
                pm, ps, pz, fm, fs, fz, inv_m, active, BLOCK, MASKED=False,
            )  # fmt: skip
    else:
        for i in range(0, CHUNK, BLOCK):
            _fused_block(
                w, g, m, v, t0, G, start, i, n, h_decay, h_step, h_b1, h_b2, h_eps, h_bc2,
                pm, ps, pz, fm, fs, fz, inv_m, active, BLOCK, MASKED=True,
            )  # fmt: skip


@triton.jit
def _masked_block(
    w, g, m, v, t0, pin, start, i, n, h_decay, h_step, h_b1, h_b2, h_eps, h_bc2,
    BLOCK: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    offs = block_offsets(start, i, BLOCK, MASKED)
    x = _adamw(w, g, m, v, offs, n, h_decay, h_step, h_b1, h_b2, h_eps, h_bc2, MASKED)
    pinned = load_f32(pin, offs, n, MASKED) != 0.0
    store_as(w, offs, n, tl.where(pinned, load_f32(t0, offs, n, MASKED), x), MASKED)


@triton.jit
def masked_adamw_kernel(
    w_base, g_base, m_base, v_base, t0_base, pin_base,
    w_table, g_table, m_table, v_table, t0_table, pin_table,
    chunk_tensor_ptr, chunk_start_ptr, numel_ptr, hyper_ptr,
    ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """MagnitudeMaskAdamW's pass, program = one chunk of one tensor t: AdamW's update of m, v and
    w, then w ← θ₀ where the pin mask (uint8, a view of the bool mask) is set, else the AdamW
    value, rounded once. w, m, v read and written once; g, θ₀ and the mask read once."""
    t, start, n, full = _chunk(chunk_tensor_ptr, chunk_start_ptr, numel_ptr, CHUNK)
    w = _operand(w_base, w_table, t, ALIGNED)
    g = _operand(g_base, g_table, t, ALIGNED)
    m = _operand(m_base, m_table, t, ALIGNED)
    v = _operand(v_base, v_table, t, ALIGNED)
    t0 = _operand(t0_base, t0_table, t, ALIGNED)
    pin = _operand(pin_base, pin_table, t, ALIGNED)
    h_decay, h_step, h_b1, h_b2, h_eps, h_bc2 = _hyper(hyper_ptr, t)
    if full:
        for i in range(0, CHUNK, BLOCK):
            _masked_block(w, g, m, v, t0, pin, start, i, n, h_decay, h_step, h_b1, h_b2, h_eps,
                          h_bc2, BLOCK, MASKED=False)  # fmt: skip
    else:
        for i in range(0, CHUNK, BLOCK):
            _masked_block(w, g, m, v, t0, pin, start, i, n, h_decay, h_step, h_b1, h_b2, h_eps,
                          h_bc2, BLOCK, MASKED=True)  # fmt: skip


def _fused_bytes(a, grid):
    # Per element: w, m, v read and written, g and θ₀ read (the parameter dtype), G read (fp32).
    # An upper bound by less than one chunk per tensor, as for the SPIDER passes.
    size = a["w_base"].element_size()
    return 0, grid[0] * a["CHUNK"] * (8 * size + 4)


def _masked_bytes(a, grid):
    # Per element: w, m, v read and written, g and θ₀ read, the 1-byte mask read.
    return 0, grid[0] * a["CHUNK"] * (8 * a["w_base"].element_size() + 1)


# The static model's analytic cost of each launch (see kernels/importance.py's COSTS).
COSTS = {"spider_adamw_blend_kernel": _fused_bytes, "masked_adamw_kernel": _masked_bytes}
