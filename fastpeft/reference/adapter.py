"""Bottleneck adapters (SPEC §3, Paper A), transcribed literally.

    A(z) = scaling · act(drop(z) W_downᵀ) W_upᵀ          W_down [H, d], W_up [d, H], no biases
    out  = residual + A(z)                               residual = z unless given

z is cast to the adapter dtype for the bottleneck branch and the sum is rounded once to the
residual's dtype (torch type promotion: a 16-bit residual plus an fp32 delta adds in fp32), as
PEFT does for its fp32 adapters on a 16-bit base. Autograd gives the gradients; dropout is applied
with an explicit keep-mask so a kernel's own mask can be replayed.
"""

import torch
import torch.nn.functional as F

#: The bottleneck non-linearities by name; "gelu" is the exact (erf) form, F.gelu's default.
ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": F.gelu,
    "silu": F.silu,
}


def adapter(
    z: torch.Tensor,
    w_down: torch.Tensor,
    w_up: torch.Tensor,
    scaling: float,
    activation: str,
    residual: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """residual + A(z) for z [..., d]; `keep` (bool, z's shape) applies dropout with `dropout_p`."""
    residual = z if residual is None else residual
    zc = z.to(w_down.dtype)
    if keep is not None:
        zc = zc * keep / (1.0 - dropout_p)
    pre = F.linear(zc, w_down)
    a = ACTIVATIONS[activation](pre)
    delta = F.linear(a, w_up) * scaling
    return (residual + delta).to(residual.dtype)


def adapter_pair(
    x: torch.Tensor,
    w_down_1: torch.Tensor,
    w_up_1: torch.Tensor,
    w_down_2: torch.Tensor,
    w_up_2: torch.Tensor,
    scaling: float,
    activation: str,
    keep_1: torch.Tensor | None = None,
    keep_2: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + A1(x), x + A2(x)): two independent pre-adapters on one input (LLaVA's gate/up)."""
    u = adapter(x, w_down_1, w_up_1, scaling, activation, keep=keep_1, dropout_p=dropout_p)
    v = adapter(x, w_down_2, w_up_2, scaling, activation, keep=keep_2, dropout_p=dropout_p)
    return u, v
