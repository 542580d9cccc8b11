"""Naming the quantisation behind a PEFT layer that stays on PEFT's path.

The fused kernels read a dense fp32/fp16/bf16 base weight. A quantised base (bitsandbytes 4/8-bit,
HQQ, torchao, GPTQ, AWQ, ...) is stored packed and dequantised inside its own forward, so such a
layer keeps PEFT's forward; this module turns "layer type Linear4bit is not supported" into a
reason that says so and names the library. Detection reads only where classes are defined (no
quantisation library is imported): the LoRA/IA3 layer's own class (PEFT puts its wrappers for
quantised bases in ``peft.tuners.<method>.<backend>``), the base layer's and its weight's.
"""

from __future__ import annotations

import torch
from torch import nn

# Top-level packages of quantisation libraries → the name a reason gives.
_LIBRARIES = {
    "bitsandbytes": "bitsandbytes",
    "hqq": "HQQ",
    "torchao": "torchao",
    "optimum": "Quanto",  # optimum.quanto
    "quanto": "Quanto",
    "awq": "AutoAWQ",
    "auto_gptq": "AutoGPTQ",
    "gptqmodel": "GPTQModel",
    "eetq": "EETQ",
    "aqlm": "AQLM",
}
# PEFT's backend modules for quantised bases (peft/tuners/lora/bnb.py etc.) → the library.
_PEFT_BACKENDS = {
    "bnb": "bitsandbytes",
    "hqq": "HQQ",
    "torchao": "torchao",
    "gptq": "GPTQ",
    "awq": "AutoAWQ",
    "aqlm": "AQLM",
    "eetq": "EETQ",
    "inc": "Intel Neural Compressor",
}


def _library_of(cls: type) -> str | None:
    parts = cls.__module__.split(".")
    if parts[0] == "peft" and len(parts) >= 4 and parts[1] == "tuners":
        return _PEFT_BACKENDS.get(parts[3])
    if parts[0] == "optimum" and parts[1:2] != ["quanto"]:
        return None
    return _LIBRARIES.get(parts[0])


def quantiser_of(module: nn.Module, base_layer: nn.Module) -> str | None:
    """The quantisation library behind a PEFT tuner layer `module` over `base_layer`, or None
    when nothing in it comes from one."""
    weight = getattr(base_layer, "weight", None)
    classes = [type(module), type(base_layer)]
    if isinstance(weight, torch.Tensor):
        classes.append(type(weight))
    for cls in classes:
        library = _library_of(cls)
        if library is not None:
            return library
    return None


def quantised_reason(module: nn.Module, base_layer: nn.Module) -> str | None:
    """The skip reason for a PEFT tuner layer over a quantised base, or None if it is not one."""
    library = quantiser_of(module, base_layer)
    if library is None:
        return None
    return (
        f"quantised base layer ({library} {type(base_layer).__name__}): the fused kernels read a "
        "dense fp32/fp16/bf16 weight, so PEFT's own forward (which dequantises it) runs"
    )
