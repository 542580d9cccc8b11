"""Triton kernels of the SPIDER engine (SPEC §6): three passes over many tensors per launch.

Tensors travel through int64 address tables (``table[t]`` is tensor t's data pointer, cast to a
typed pointer in the kernel), so one launch covers every tensor of a dtype group. Grid of the
passes: one program per CHUNK-element chunk of one tensor, from host-built (tensor, start) chunk
tables. Reductions: each program writes its chunk's sums (fp32 lanes, fp64 lane total) to its own
slot of a [chunks, 2] fp64 buffer, and ``spider_finalize_kernel`` (one program per tensor) adds a
tensor's slots in chunk order: deterministic, no atomics.

Numerics (shared with fastpeft/torch_path/importance.py, csrc/cpu/spider.cpp, csrc/cuda/spider.cu):
per-tensor scalars derived in fp64 from a (Σ|x|, Σx², numel) row, then fp32 per-element math.
DT codes: 0 float32, 1 float16, 2 bfloat16 (the parameter/θ₀/gradient dtype of the group).
"""

import triton
import triton.language as tl


@triton.jit
def _typed(addr, DT: tl.constexpr):
    """The int64 address ``addr`` as a pointer to the group's element type."""
    if DT == 0:
        p = addr.to(tl.pointer_type(tl.float32))
    elif DT == 1:
        p = addr.to(tl.pointer_type(tl.float16))
    else:
        p = addr.to(tl.pointer_type(tl.bfloat16))
    return p


@triton.jit
def _r_stats(m_ptr, t):
    """(mean fp32, 1/(std + 1e-12) fp32, nonzero) of R for moments row t: unbiased std, std := 0
    for numel <= 1, R = 0 for an all-zero tensor. Divisors are clamped so that no branch divides
    by zero (the interpreter would warn)."""
    s1 = tl.load(m_ptr + 3 * t)
    s2 = tl.load(m_ptr + 3 * t + 1)
    n = tl.load(m_ptr + 3 * t + 2)
    mean = tl.where(n > 0, s1 / tl.maximum(n, 1.0), 0.0)
    var = tl.where(n > 1, (s2 - s1 * mean) / tl.maximum(n - 1.0, 1.0), 0.0)
    var = tl.where(var > 0, var, 0.0)
    scale = 1.0 / (tl.sqrt(var) + 1e-12)
    return mean.to(tl.float32), scale.to(tl.float32), s1 > 0


@triton.jit
def _importance(a, mean, scale, nonzero):
    """R(|x|) for a = |x| in fp32: an overflow-free sigmoid (exp of −|z| only)."""
    z = (a - mean) * scale
    e = tl.exp(-tl.abs(z))
    r = tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return tl.where(nonzero, r, 0.0)


@triton.jit
def _c_raw(t0, g, pre_mean, pre_scale, pre_nz, ft_mean, ft_scale, ft_nz, mask):
    """(c_raw, selected) for θ₀ and G values in fp32: I_ft / (I_pre + I_ft) where I_pre < I_ft."""
    ip = _importance(tl.abs(t0), pre_mean, pre_scale, pre_nz)
    ift = _importance(tl.abs(g), ft_mean, ft_scale, ft_nz)
    sel = (ip < ift) & mask
    return tl.where(sel, ift / tl.where(sel, ip + ift, 1.0), 0.0), sel


@triton.jit
def _inverse_mean(sel_ptr, t):
    """(1/m in fp32, 0 where nothing is selected; whether anything is) from the select sums row
    t, (Σ c_raw, count): m = Σ c_raw / count, the mean of the nonzero c_raw."""
    total = tl.load(sel_ptr + 2 * t)
    count = tl.load(sel_ptr + 2 * t + 1)
    active = count > 0
    return tl.where(active, count / tl.where(active, total, 1.0), 0.0).to(tl.float32), active


@triton.jit
def spider_accumulate_kernel(
    G_table, g_table, chunk_tensor_ptr, chunk_start_ptr, numel_ptr, partial_ptr,
    DT: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Pass 1, program = one chunk: G += g (G fp32, g of type DT) and the chunk's Σ|G|, ΣG² of
    the updated G into partial[pid, 0:2]."""
    pid = tl.program_id(0)
    t = tl.load(chunk_tensor_ptr + pid)
    start = tl.load(chunk_start_ptr + pid)
    n = tl.load(numel_ptr + t)
    G = tl.load(G_table + t).to(tl.pointer_type(tl.float32))
    g = _typed(tl.load(g_table + t), DT)
    s = tl.zeros([BLOCK], dtype=tl.float32)
    q = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(0, CHUNK, BLOCK):
        offs = start + i + tl.arange(0, BLOCK)
        mask = offs < n
        v = tl.load(G + offs, mask=mask, other=0.0) + tl.load(g + offs, mask=mask, other=0.0).to(
            tl.float32
        )
        tl.store(G + offs, v, mask=mask)
        s += tl.abs(v)
        q += v * v
    tl.store(partial_ptr + 2 * pid, tl.sum(s.to(tl.float64), axis=0))
    tl.store(partial_ptr + 2 * pid + 1, tl.sum(q.to(tl.float64), axis=0))


@triton.jit
def spider_select_kernel(
    t0_table, G_table, chunk_tensor_ptr, chunk_start_ptr, numel_ptr, pre_ptr, ft_ptr, partial_ptr,
    DT: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Pass 2, program = one chunk: Σ c_raw and count(c_raw > 0) of the chunk into
    partial[pid, 0:2]; I_pre from θ₀ and moments_pre[t], I_ft from G and moments_ft[t]."""
    pid = tl.program_id(0)
    t = tl.load(chunk_tensor_ptr + pid)
    start = tl.load(chunk_start_ptr + pid)
    n = tl.load(numel_ptr + t)
    t0 = _typed(tl.load(t0_table + t), DT)
    G = tl.load(G_table + t).to(tl.pointer_type(tl.float32))
    pm, ps, pz = _r_stats(pre_ptr, t)
    fm, fs, fz = _r_stats(ft_ptr, t)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    cnt = tl.zeros([BLOCK], dtype=tl.int32)
    for i in range(0, CHUNK, BLOCK):
        offs = start + i + tl.arange(0, BLOCK)
        mask = offs < n
        a = tl.load(t0 + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(G + offs, mask=mask, other=0.0)
        c, sel = _c_raw(a, g, pm, ps, pz, fm, fs, fz, mask)
        acc += c
        cnt += sel.to(tl.int32)
    tl.store(partial_ptr + 2 * pid, tl.sum(acc.to(tl.float64), axis=0))
    tl.store(partial_ptr + 2 * pid + 1, tl.sum(cnt, axis=0).to(tl.float64))


@triton.jit
def spider_blend_kernel(
    w_table, t0_table, G_table, chunk_tensor_ptr, chunk_start_ptr, numel_ptr,
    pre_ptr, ft_ptr, sel_ptr,
    DT: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Pass 3, program = one chunk: w ← θ₀ + min(c_raw / m, 1) ⊙ (w − θ₀), m = Σc_raw / count
    from sel[t]; a tensor with count 0 is not written at all."""
    pid = tl.program_id(0)
    t = tl.load(chunk_tensor_ptr + pid)
    start = tl.load(chunk_start_ptr + pid)
    n = tl.load(numel_ptr + t)
    w = _typed(tl.load(w_table + t), DT)
    t0 = _typed(tl.load(t0_table + t), DT)
    G = tl.load(G_table + t).to(tl.pointer_type(tl.float32))
    pm, ps, pz = _r_stats(pre_ptr, t)
    fm, fs, fz = _r_stats(ft_ptr, t)
    inv_m, active = _inverse_mean(sel_ptr, t)
    limit = tl.where(active, n, 0)  # an inactive tensor masks every lane: no memory traffic
    for i in range(0, CHUNK, BLOCK):
        offs = start + i + tl.arange(0, BLOCK)
        mask = offs < limit
        a = tl.load(t0 + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(G + offs, mask=mask, other=0.0)
        x = tl.load(w + offs, mask=mask, other=0.0).to(tl.float32)
        c, _ = _c_raw(a, g, pm, ps, pz, fm, fs, fz, mask)
        c = tl.minimum(c * inv_m, 1.0)
        tl.store(w + offs, (a + c * (x - a)).to(w.dtype.element_ty), mask=mask)


@triton.jit
def spider_finalize_kernel(
    partial_ptr, first_chunk_ptr, n_chunks_ptr, numel_ptr, out_ptr,
    WIDTH: tl.constexpr, WITH_NUMEL: tl.constexpr, RBLOCK: tl.constexpr,
):  # fmt: skip
    """Program = one tensor t: out[t, 0:2] = Σ partial[c, 0:2] over t's chunks (fixed blocked
    order), and out[t, 2] = numel when WITH_NUMEL (a [n, 3] moments row)."""
    t = tl.program_id(0)
    first = tl.load(first_chunk_ptr + t)
    k = tl.load(n_chunks_ptr + t)
    a = tl.zeros([RBLOCK], dtype=tl.float64)
    b = tl.zeros([RBLOCK], dtype=tl.float64)
    for i in range(0, k, RBLOCK):
        idx = i + tl.arange(0, RBLOCK)
        m = idx < k
        a += tl.load(partial_ptr + 2 * (first + idx), mask=m, other=0.0)
        b += tl.load(partial_ptr + 2 * (first + idx) + 1, mask=m, other=0.0)
    tl.store(out_ptr + WIDTH * t, tl.sum(a, axis=0))
    tl.store(out_ptr + WIDTH * t + 1, tl.sum(b, axis=0))
    if WITH_NUMEL:
        tl.store(out_ptr + WIDTH * t + 2, tl.load(numel_ptr + t).to(tl.float64))


def _pass_bytes(per_element):
    # The passes stream every element of the group once: grid[0] chunks of CHUNK elements (an
    # upper bound by less than one chunk per tensor). DT: 0 fp32, 1 fp16, 2 bf16.
    def cost(a, grid):
        size = 4 if a["DT"] == 0 else 2
        return 0, grid[0] * a["CHUNK"] * per_element(size)

    return cost


# The static model's analytic cost of each launch (see kernels/lora.py's COSTS): the tensors
# travel through address tables, so the bytes are counted from the elements each pass streams.
COSTS = {
    "spider_accumulate_kernel": _pass_bytes(lambda size: 4 + 4 + size),  # G read+write, g
    "spider_select_kernel": _pass_bytes(lambda size: size + 4),  # θ₀, G
    "spider_blend_kernel": _pass_bytes(lambda size: 3 * size + 4),  # w read+write, θ₀, G
    "spider_finalize_kernel": lambda a, grid: (0, None),
}
