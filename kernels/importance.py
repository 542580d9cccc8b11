"""Triton kernels of the SPIDER engine (SPEC §6): three passes over many tensors per launch.

One launch covers every tensor of a dtype group. Each operand list comes as a typed base pointer
(its first tensor) and a table of element offsets from it (``table[t]``: tensor t's data pointer
minus the base, in elements), not as raw addresses: an address loaded from a table carries no
alignment facts, while a pointer argument is specialised as 16-byte aligned by Triton and the
offsets can be hinted. Grid of the passes: one program per CHUNK-element chunk of one tensor, from
host-built (tensor, start) chunk tables. Chunks start at multiples of CHUNK, and when the host has
checked that every address is 16-byte aligned (ALIGNED) a full chunk is streamed with unmasked,
hinted loads the compiler widens to 16 bytes; only a tensor's last chunk, if partial, is masked.

Reductions: each program writes its chunk's sums (fp32 lanes, fp64 lane total) to its own slot of
a [chunks, 2] fp64 buffer, and ``spider_finalize_kernel`` (one program per tensor) adds a
tensor's slots in chunk order: deterministic, no atomics.

Numerics (shared with fastpeft/torch_path/importance.py, csrc/cpu/spider.cpp, csrc/cuda/spider.cu):
per-tensor scalars derived in fp64 from a (Σ|x|, Σx², numel) row, then fp32 per-element math.
"""

import triton
import triton.language as tl


@triton.jit
def _operand(base, table, t, ALIGNED: tl.constexpr):
    """Tensor t of an operand list: its base pointer plus its element offset from the table."""
    off = tl.load(table + t)
    if ALIGNED:  # every address 16-byte aligned: offsets are whole 16-byte words
        off = tl.multiple_of(off, 128 // base.dtype.element_ty.primitive_bitwidth)
    return base + off


@triton.jit
def _chunk(chunk_tensor_ptr, chunk_start_ptr, numel_ptr, CHUNK: tl.constexpr):
    """(tensor t, first element, t's numel, whether the chunk is full) of this program's chunk."""
    pid = tl.program_id(0)
    t = tl.load(chunk_tensor_ptr + pid)
    start = tl.multiple_of(tl.load(chunk_start_ptr + pid), CHUNK)
    n = tl.load(numel_ptr + t)
    return t, start, n, start + CHUNK <= n


@triton.jit
def block_offsets(start, i, BLOCK: tl.constexpr, MASKED: tl.constexpr):
    """Offsets of the BLOCK elements at start + i; in a full chunk (not MASKED) hinted contiguous
    and BLOCK-aligned, so that unmasked loads and stores widen to 16 bytes."""
    if MASKED:
        offs = start + i + tl.arange(0, BLOCK)
    else:
        offs = start + i + tl.max_contiguous(tl.multiple_of(tl.arange(0, BLOCK), BLOCK), BLOCK)
    return offs


@triton.jit
def load_f32(ptr, offs, n, MASKED: tl.constexpr):
    """ptr[offs] in fp32; MASKED: 0 at offsets >= n (a tensor's partial last chunk)."""
    if MASKED:
        x = tl.load(ptr + offs, mask=offs < n, other=0.0)
    else:
        x = tl.load(ptr + offs)
    return x.to(tl.float32)


@triton.jit
def store_as(ptr, offs, n, value, MASKED: tl.constexpr):
    """ptr[offs] = value in ptr's dtype; MASKED: only at offsets < n."""
    if MASKED:
        tl.store(ptr + offs, value.to(ptr.dtype.element_ty), mask=offs < n)
    else:
        tl.store(ptr + offs, value.to(ptr.dtype.element_ty))


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
def _accumulate_block(G, g, start, i, n, s, q, BLOCK: tl.constexpr, MASKED: tl.constexpr):
    offs = block_offsets(start, i, BLOCK, MASKED)
    v = load_f32(G, offs, n, MASKED) + load_f32(g, offs, n, MASKED)
    store_as(G, offs, n, v, MASKED)
    return s + tl.abs(v), q + v * v


@triton.jit
def spider_accumulate_kernel(
    G_base, g_base, G_table, g_table, chunk_tensor_ptr, chunk_start_ptr, numel_ptr, partial_ptr,
    ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Pass 1, program = one chunk: G += g (G fp32, g the group's dtype) and the chunk's Σ|G|,
    ΣG² of the updated G into partial[pid, 0:2]."""
    t, start, n, full = _chunk(chunk_tensor_ptr, chunk_start_ptr, numel_ptr, CHUNK)
    G = _operand(G_base, G_table, t, ALIGNED)
    g = _operand(g_base, g_table, t, ALIGNED)
    s = tl.zeros([BLOCK], dtype=tl.float32)
    q = tl.zeros([BLOCK], dtype=tl.float32)
    if full:
        for i in range(0, CHUNK, BLOCK):
            s, q = _accumulate_block(G, g, start, i, n, s, q, BLOCK, MASKED=False)
    else:
        for i in range(0, CHUNK, BLOCK):
            s, q = _accumulate_block(G, g, start, i, n, s, q, BLOCK, MASKED=True)
    pid = tl.program_id(0)
    tl.store(partial_ptr + 2 * pid, tl.sum(s.to(tl.float64), axis=0))
    tl.store(partial_ptr + 2 * pid + 1, tl.sum(q.to(tl.float64), axis=0))


@triton.jit
def _select_block(
    t0, G, start, i, n, pm, ps, pz, fm, fs, fz, acc, cnt,
    BLOCK: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    offs = block_offsets(start, i, BLOCK, MASKED)
    a, g = load_f32(t0, offs, n, MASKED), load_f32(G, offs, n, MASKED)
    c, sel = _c_raw(a, g, pm, ps, pz, fm, fs, fz, offs < n)
    return acc + c, cnt + sel.to(tl.int32)


@triton.jit
def spider_select_kernel(
    t0_base, G_base, t0_table, G_table, chunk_tensor_ptr, chunk_start_ptr, numel_ptr, pre_ptr,
    ft_ptr, partial_ptr,
    ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Pass 2, program = one chunk: Σ c_raw and count(c_raw > 0) of the chunk into
    partial[pid, 0:2]; I_pre from θ₀ and moments_pre[t], I_ft from G and moments_ft[t]."""
    t, start, n, full = _chunk(chunk_tensor_ptr, chunk_start_ptr, numel_ptr, CHUNK)
    t0 = _operand(t0_base, t0_table, t, ALIGNED)
    G = _operand(G_base, G_table, t, ALIGNED)
    pm, ps, pz = _r_stats(pre_ptr, t)
    fm, fs, fz = _r_stats(ft_ptr, t)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    cnt = tl.zeros([BLOCK], dtype=tl.int32)
    if full:
        for i in range(0, CHUNK, BLOCK):
            acc, cnt = _select_block(t0, G, start, i, n, pm, ps, pz, fm, fs, fz, acc, cnt,
                                     BLOCK, MASKED=False)  # fmt: skip
    else:
        for i in range(0, CHUNK, BLOCK):
            acc, cnt = _select_block(t0, G, start, i, n, pm, ps, pz, fm, fs, fz, acc, cnt,
                                     BLOCK, MASKED=True)  # fmt: skip
    pid = tl.program_id(0)
    tl.store(partial_ptr + 2 * pid, tl.sum(acc.to(tl.float64), axis=0))
    tl.store(partial_ptr + 2 * pid + 1, tl.sum(cnt, axis=0).to(tl.float64))


@triton.jit
def _blend_block(
    w, t0, G, start, i, n, pm, ps, pz, fm, fs, fz, inv_m,
    BLOCK: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    offs = block_offsets(start, i, BLOCK, MASKED)
    a, x = load_f32(t0, offs, n, MASKED), load_f32(w, offs, n, MASKED)
    c, _ = _c_raw(a, load_f32(G, offs, n, MASKED), pm, ps, pz, fm, fs, fz, offs < n)
    store_as(w, offs, n, a + tl.minimum(c * inv_m, 1.0) * (x - a), MASKED)


@triton.jit
def spider_blend_kernel(
    w_base, t0_base, G_base, w_table, t0_table, G_table, chunk_tensor_ptr, chunk_start_ptr,
    numel_ptr, pre_ptr, ft_ptr, sel_ptr,
    ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Pass 3, program = one chunk: w ← θ₀ + min(c_raw / m, 1) ⊙ (w − θ₀), m = Σc_raw / count
    from sel[t]; a tensor with count 0 is not read or written at all."""
    t, start, n, full = _chunk(chunk_tensor_ptr, chunk_start_ptr, numel_ptr, CHUNK)
    inv_m, active = _inverse_mean(sel_ptr, t)
    if active:
        w = _operand(w_base, w_table, t, ALIGNED)
        t0 = _operand(t0_base, t0_table, t, ALIGNED)
        G = _operand(G_base, G_table, t, ALIGNED)
        pm, ps, pz = _r_stats(pre_ptr, t)
        fm, fs, fz = _r_stats(ft_ptr, t)
        if full:
            for i in range(0, CHUNK, BLOCK):
                _blend_block(w, t0, G, start, i, n, pm, ps, pz, fm, fs, fz, inv_m, BLOCK,
                             MASKED=False)  # fmt: skip
        else:
            for i in range(0, CHUNK, BLOCK):
                _blend_block(w, t0, G, start, i, n, pm, ps, pz, fm, fs, fz, inv_m, BLOCK,
                             MASKED=True)  # fmt: skip


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
    # upper bound by less than one chunk per tensor), of the group's element size.
    def cost(a, grid):
        size = (a["g_base"] if "g_base" in a else a["t0_base"]).element_size()
        return 0, grid[0] * a["CHUNK"] * per_element(size)

    return cost


# The static model's analytic cost of each launch (see kernels/lora.py's COSTS): the tensors
# travel through offset tables, so the bytes are counted from the elements each pass streams.
COSTS = {
    "spider_accumulate_kernel": _pass_bytes(lambda size: 4 + 4 + size),  # G read+write, g
    "spider_select_kernel": _pass_bytes(lambda size: size + 4),  # θ₀, G
    "spider_blend_kernel": _pass_bytes(lambda size: 3 * size + 4),  # w read+write, θ₀, G
    "spider_finalize_kernel": lambda a, grid: (0, None),
}
