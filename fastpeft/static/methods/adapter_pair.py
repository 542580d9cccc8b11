"""The gate/up adapter pair's static model: the fused pair launches (x read once) against two
eager modules on the same input."""

from ...bench.cases.layer_case import LayerCase
from .. import sequences as seq
from ._bottleneck import eager_adapter
from ._meta import BASE_DTYPE, DTYPES, meta, seeds

VARIANTS = [(w, p) for w in ("bfloat16", "float32") for p in (0.0, 0.05)]


def launches(case: LayerCase, weights: str, dropout: float) -> None:
    from ...triton_path import adapter as host

    M, d, H, W = case.M, case.K, case.r, DTYPES[weights]
    x, seed = meta(M, d), seeds(2, dropout)
    weights_ = [meta(H, d, dtype=W), meta(d, H, dtype=W), meta(H, d, dtype=W), meta(d, H, dtype=W)]
    u, v, pre, keep = host.forward_pair(x, *weights_, seed, 1.0, dropout, "tanh")
    dy = meta(M, d)
    host.backward_pair(dy, dy, x, *weights_, pre, keep, seed, 1.0, dropout, "tanh", True)


def references(case: LayerCase, weights: str, dropout: float) -> dict[str, list[seq.Op]]:
    one = eager_adapter(case.M, case.K, case.r, BASE_DTYPE, DTYPES[weights], dropout)
    return {"eager": one + one}
