"""PEFT's LoRA Linear forward, transcribed literally (peft.tuners.lora.layer.Linear.forward).

    result = base_layer(x)
    x = x.to(lora_A.dtype)
    result = result + lora_B(lora_A(dropout(x))) * scaling
    result = result.to(base dtype)

Autograd gives the gradients; the dropout is applied with an explicit keep-mask so a kernel's
own mask can be replayed.
"""

import torch
import torch.nn.functional as F


def lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scaling: float,
    keep: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """y [..., N] for x [..., K]; `keep` (bool, x's shape) applies dropout with `dropout_p`."""
    result = F.linear(x, weight, bias)
    base_dtype = result.dtype
    x = x.to(lora_a.dtype)
    if keep is not None:
        x = x * keep / (1.0 - dropout_p)
    result = result + F.linear(F.linear(x, lora_a), lora_b) * scaling
    return result.to(base_dtype)
