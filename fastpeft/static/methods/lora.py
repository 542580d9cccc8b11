"""LoRA's static model: the fused forward and backward launches at each bench case, against the
frozen base linear and PEFT's own kernels (base GEMM, dropout mask and copy, the casts, the two
small GEMMs, scale and add, and their backward).

A variant's `weights` names the adapter dtype, then optionally "tf32" (torch's allow_tf32 on:
plain TF32 for fp32 products, in the kernels and in PEFT's matmuls alike) and "hybrid" (the
hybrid path: the base products by cuBLAS, modelled at the reference's rate, and the LoRA terms
by the Triton launches).
"""

from ...bench.cases.layer_case import LayerCase
from .. import sequences as seq
from ._meta import BASE_DTYPE, DTYPES, meta, seeds

# (adapter dtype [flags], dropout): PEFT's fp32 default and 16-bit adapters, without and with
# Paper A's dropout; Paper A's fp32 setting with TF32 allowed; the hybrid path where dropout is on.
VARIANTS = [(w, p) for w in ("bfloat16", "float32") for p in (0.0, 0.05)] + [
    ("float32 tf32", 0.05),
    ("bfloat16 hybrid", 0.05),
    ("float32 hybrid", 0.05),
]


def fields(weights: str) -> dict:
    """The case row's fields for a variant: adapter dtype, path and TF32."""
    name, *flags = weights.split()
    return {
        "adapter_dtype": name,
        "path": "hybrid" if "hybrid" in flags else "fused",
        "allow_tf32": "tf32" in flags,
    }


def launches(case: LayerCase, weights: str, dropout: float) -> None:
    from ...triton_path import lora, lora_hybrid
    from ...triton_path.launch import allow_tf32

    f = fields(weights)
    host = lora_hybrid if f["path"] == "hybrid" else lora
    M, K, N, R, A = case.M, case.K, case.N, case.r, DTYPES[f["adapter_dtype"]]
    x, w, seed = meta(M, K), meta(N, K), seeds(1, dropout)
    lora_a, lora_b = meta(R, K, dtype=A), meta(N, R, dtype=A)
    with allow_tf32(f["allow_tf32"]):
        _, t, keep = host.forward(x, w, None, lora_a, lora_b, seed, 2.0, dropout)
        host.backward(meta(M, N), x, w, lora_a, lora_b, t, keep, seed, 2.0, dropout, True)


def targets(row: dict) -> list[tuple[str, float, str]]:
    """Issue 17's targets for the rows they name: (field, limit, "max" or "min"). The headline
    (r=16, 16-bit adapters, dropout 0.05) within 1.10x the frozen base and 1.35x faster than
    PEFT; Paper A's setting (r=128, PEFT's fp32 adapters, dropout 0.05) within 1.3x the base."""
    if row["dropout"] != 0.05 or row.get("path") == "hybrid":
        return []
    if row["r"] == 16 and row["adapter_dtype"] == "bfloat16":
        return [
            ("predicted_fused_over_base", 1.10, "max"),
            ("predicted_peft_over_fused", 1.35, "min"),
        ]
    if row["r"] == 128 and row["adapter_dtype"] == "float32":
        return [("predicted_fused_over_base", 1.3, "max")]
    return []


def untraced_ops(case: LayerCase, weights: str, dropout: float) -> list[seq.Op]:
    """What the path runs besides its Triton launches: the hybrid path's cuBLAS base products."""
    if fields(weights)["path"] != "hybrid":
        return []
    forward, backward = seq.base_linear(case.M, case.K, case.N, BASE_DTYPE)
    return forward + backward


def references(case: LayerCase, weights: str, dropout: float) -> dict[str, list[seq.Op]]:
    M, K, N, R = case.M, case.K, case.N, case.r
    f = fields(weights)
    D, A = BASE_DTYPE, DTYPES[f["adapter_dtype"]]
    rate = "tf32" if f["allow_tf32"] and A.itemsize == 4 else None  # PEFT's fp32 matmuls
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
            seq.gemm("lora_A", M, R, K, A, rate=rate),
            seq.gemm("lora_B", M, N, R, A, rate=rate),
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
        seq.gemm("dB = gᵀ t", N, R, M, A, rate=rate),
        seq.gemm("dt = g B", M, R, N, A, rate=rate),
        seq.gemm("dA = dtᵀ drop(x)", R, K, M, A, rate=rate),
        seq.gemm("d drop(x) = dt A", M, K, R, A, rate=rate),
    ]
    if mixed:
        bwd.append(seq.elementwise("cast dx branch", M * K * A.itemsize, M * K * D.itemsize))
    if dropout > 0:
        bwd += seq.dropout_backward(M, K, D)
    bwd += base_bwd + [seq.elementwise("sum dx", 2 * M * K * D.itemsize, M * K * D.itemsize)]
    return {"base": base_fwd + base_bwd, "peft": fwd + bwd}
