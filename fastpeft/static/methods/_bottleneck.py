"""The eager bottleneck adapter's kernels, shared by the single adapter and the gate/up pair."""

import torch

from .. import sequences as seq


def eager_adapter(M: int, d: int, H: int, D: torch.dtype, W: torch.dtype, dropout: float):
    """The eager module's forward and backward kernels for one adapter on z [M, d] (dtype D) with
    weights of dtype W: dropout, cast, down GEMM, activation, up GEMM, scale, residual add."""
    zs, ws = M * d * D.itemsize, M * d * W.itemsize
    hidden = M * H * W.itemsize
    mixed = W != D
    fwd = seq.dropout_with_copy(M, d, D, W) if dropout > 0 else []
    if mixed and dropout == 0:
        fwd.append(seq.elementwise("cast z", zs, ws))
    fwd += [
        seq.gemm("down", M, H, d, W),
        seq.elementwise("activation", hidden, hidden),
        seq.gemm("up", M, d, H, W),
        seq.elementwise("scale", ws, ws),
        seq.elementwise("residual add", zs + ws, max(zs, ws)),
    ]
    if mixed:
        fwd.append(seq.elementwise("cast out", ws, zs))
    bwd = [seq.elementwise("cast grad", zs, ws)] if mixed else []
    bwd += [
        seq.elementwise("scale backward", ws, ws),
        seq.gemm("dW_up", d, H, M, W),
        seq.gemm("d act", M, H, d, W),
        seq.elementwise("activation backward", 2 * hidden, hidden),
        seq.gemm("dW_down", H, d, M, W),
        seq.gemm("dz branch", M, d, H, W),
    ]
    if mixed:
        bwd.append(seq.elementwise("cast dz branch", ws, zs))
    if dropout > 0:
        bwd += seq.dropout_backward(M, d, D)
    bwd.append(seq.elementwise("sum dz", 2 * zs, zs))
    return fwd + bwd
