"""The single bottleneck adapter's static model: the fused launches against the eager module."""

from ...bench.cases.layer_case import LayerCase
from .. import sequences as seq
from ._bottleneck import eager_adapter
from ._meta import BASE_DTYPE, DTYPES, meta, seeds

VARIANTS = [(w, p) for w in ("bfloat16", "float32") for p in (0.0, 0.05)]


def launches(case: LayerCase, weights: str, dropout: float) -> None:
    from ...triton_path import adapter as host

    M, d, H, W = case.M, case.K, case.r, DTYPES[weights]
    z, seed = meta(M, d), seeds(1, dropout)
    w_down, w_up = meta(H, d, dtype=W), meta(d, H, dtype=W)
    _, pre, keep = host.forward(z, w_down, w_up, None, seed, 1.0, dropout, "tanh")
    host.backward(meta(M, d), z, w_down, w_up, pre, keep, seed, 1.0, dropout, "tanh", True, True)


def references(case: LayerCase, weights: str, dropout: float) -> dict[str, list[seq.Op]]:
    W = DTYPES[weights]
    return {"eager": eager_adapter(case.M, case.K, case.r, BASE_DTYPE, W, dropout)}
