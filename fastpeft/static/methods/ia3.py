"""IA3's static model: the fused launches at each bench case (output scaling at k/v and q/o, input
scaling at down_proj), against the frozen base linear and PEFT's kernels (the base GEMM, the
promoted multiply by the fp32 vector and the cast back, and their backward).

A variant's `weights` names the vector's dtype, then optionally "hybrid" (the hybrid path: the
base products by cuBLAS, modelled at the reference's rate, the scale and dl by the side kernel).
"""

from ...bench.cases.layer_case import LayerCase
from .. import sequences as seq
from ._meta import BASE_DTYPE, DTYPES, meta

# The vector's dtype (PEFT's default: fp32, and the base's), on the fused and the hybrid path.
VARIANTS = [("float32", 0.0), ("bfloat16", 0.0), ("float32 hybrid", 0.0)]


def fields(weights: str) -> dict:
    """The case row's fields for a variant: the vector's dtype and the path."""
    name, *flags = weights.split()
    return {"adapter_dtype": name, "path": "hybrid" if "hybrid" in flags else "fused"}


def launches(case: LayerCase, weights: str, dropout: float) -> None:
    from ...triton_path import ia3, ia3_hybrid

    f = fields(weights)
    host = ia3_hybrid if f["path"] == "hybrid" else ia3
    M, K, N, ff = case.M, case.K, case.N, case.feedforward
    x, w = meta(M, K), meta(N, K)
    ia3_l = meta(K if ff else N, dtype=DTYPES[f["adapter_dtype"]])
    _, z = host.forward(x, w, None, ia3_l, ff, not ff)
    host.backward(meta(M, N), x if ff else z, w, ia3_l, ff, True, True)


def targets(row: dict) -> list[tuple[str, float, str]]:
    """Issue 18's target, on the fused rows: within 3% of the frozen base. The hybrid rows are
    the race's other contender, shown beside them."""
    if row.get("path") == "hybrid":
        return []
    return [("predicted_fused_over_base", 1.03, "max")]


def untraced_ops(case: LayerCase, weights: str, dropout: float) -> list[seq.Op]:
    """What the path runs besides its Triton launches: the hybrid path's cuBLAS base products."""
    if fields(weights)["path"] != "hybrid":
        return []
    forward, backward = seq.base_linear(case.M, case.K, case.N, BASE_DTYPE)
    return forward + backward


def references(case: LayerCase, weights: str, dropout: float) -> dict[str, list[seq.Op]]:
    M, K, N = case.M, case.K, case.N
    D, V = BASE_DTYPE, DTYPES[fields(weights)["adapter_dtype"]]
    base_fwd, base_bwd = seq.base_linear(M, K, N, D)
    n = M * K if case.feedforward else M * N  # the scaled tensor: x (input) or the output
    wide = max(D.itemsize, V.itemsize)  # PEFT multiplies in the promoted dtype, then casts
    scale = [seq.elementwise("x ⊙ l" if case.feedforward else "y ⊙ l", n * D.itemsize, n * wide)]
    unscale = [seq.elementwise("dl = Σ g ⊙ saved", 2 * n * wide, 0)]
    unscale.append(seq.elementwise("g ⊙ l", n * wide, n * wide))
    if wide != D.itemsize:
        scale.append(seq.elementwise("cast back", n * wide, n * D.itemsize))
        unscale = [seq.elementwise("cast grad", n * D.itemsize, n * wide), *unscale]
        unscale.append(seq.elementwise("cast grad back", n * wide, n * D.itemsize))
    if case.feedforward:
        peft = scale + base_fwd + base_bwd + unscale
    else:
        peft = base_fwd + scale + unscale + base_bwd
    return {"base": base_fwd + base_bwd, "peft": peft}
