"""PEFT's IA3 Linear forward, transcribed literally (peft.tuners.ia3.layer.Linear.forward, 0.21).

    dtype = ia3_l.dtype; previous_dtype = x.dtype
    feed-forward targets:  x = x.to(dtype); interm = (x * l).to(previous_dtype)
                           result = base(interm)
    other targets:         result = base(x); result = (result * l).to(result.dtype)

with one active adapter (PEFT multiplies the vectors of all active adapters into l). Autograd
gives the gradients.
"""

import torch
import torch.nn.functional as F


def ia3_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    ia3_l: torch.Tensor,
    feedforward: bool,
) -> torch.Tensor:
    """y [..., N] for x [..., K]; ia3_l is 1-D: [K] when `feedforward`, else [N]."""
    dtype, previous_dtype = ia3_l.dtype, x.dtype
    if feedforward:
        x = x.to(dtype)
        interm = (x * ia3_l).to(previous_dtype)
        return F.linear(interm, weight, bias)
    result = F.linear(x, weight, bias)
    result_dtype = result.dtype
    return (result * ia3_l).to(result_dtype)
