"""LoRA's static model: the fused forward and backward launches at each bench case, against the
frozen base linear and PEFT's own kernels (base GEMM, dropout mask and copy, the casts, the two
small GEMMs, scale and add, and their backward)."""

from ...bench.cases.layer_case import LayerCase
from .. import sequences as seq
from ._meta import BASE_DTYPE, DTYPES, meta, seeds

# (adapter dtype, dropout): PEFT's fp32 default and 16-bit adapters, without and with Paper A's.
VARIANTS = [(w, p) for w in ("bfloat16", "float32") for p in (0.0, 0.05)]


def launches(case: LayerCase, weights: str, dropout: float) -> None:
    from ...triton_path import lora as host

    M, K, N, R, A = case.M, case.K, case.N, case.r, DTYPES[weights]
    x, w, seed = meta(M, K), meta(N, K), seeds(1, dropout)
    lora_a, lora_b = meta(R, K, dtype=A), meta(N, R, dtype=A)
    _, t, keep = host.forward(x, w, None, lora_a, lora_b, seed, 2.0, dropout)
    host.backward(meta(M, N), x, w, lora_a, lora_b, t, keep, seed, 2.0, dropout, True)


def references(case: LayerCase, weights: str, dropout: float) -> dict[str, list[seq.Op]]:
    M, K, N, R = case.M, case.K, case.N, case.r
    D, A = BASE_DTYPE, DTYPES[weights]
    base_fwd, base_bwd = seq.base_linear(M, K, N, D)
    mixed = A != D
    if dropout > 0:
        drop = seq.dropout_with_copy(M, K, D, A)
    else:  # nn.Identity: only the cast to the adapter dtype
        drop = [seq.elementwise("cast x", M * K * D.itemsize, M * K * A.itemsize)] if mixed else []
    out = M * N * A.itemsize
    fwd = (
        base_fwd
        + drop
        + [
            seq.gemm("lora_A", M, R, K, A),
            seq.gemm("lora_B", M, N, R, A),
            seq.elementwise("scale", out, out),
            seq.elementwise("add to base output", M * N * D.itemsize + out, out),
        ]
    )
    if mixed:
        fwd.append(seq.elementwise("cast result", out, M * N * D.itemsize))
    bwd = []
    if mixed:
        bwd.append(seq.elementwise("cast dy", M * N * D.itemsize, out))
        bwd.append(seq.elementwise("cast base grad", out, M * N * D.itemsize))
    bwd += [
        seq.elementwise("scale backward", out, out),
        seq.gemm("dB = gᵀ t", N, R, M, A),
        seq.gemm("dt = g B", M, R, N, A),
        seq.gemm("dA = dtᵀ drop(x)", R, K, M, A),
        seq.gemm("d drop(x) = dt A", M, K, R, A),
    ]
    if mixed:
        bwd.append(seq.elementwise("cast dx branch", M * K * A.itemsize, M * K * D.itemsize))
    if dropout > 0:
        bwd += seq.dropout_backward(M, K, D)
    bwd += base_bwd + [seq.elementwise("sum dx", 2 * M * K * D.itemsize, M * K * D.itemsize)]
    return {"base": base_fwd + base_bwd, "peft": fwd + bwd}
