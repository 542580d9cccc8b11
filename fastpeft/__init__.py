"""fastpeft: fused kernels for parameter-efficient fine-tuning of multimodal LLMs.

import fastpeft
report = fastpeft.patch(peft_model)   # same numbers as PEFT, faster, less memory
fastpeft.unpatch(peft_model)
"""

from .adapters import AdapterConfig, add_adapters, load_adapters, remove_adapters, save_adapters
from .functional import ia3_linear, lora_linear
from .patch import PatchReport, is_patched, patch, unpatch
from .spider import MagnitudeMask, MagnitudeMaskAdamW, Spider, SpiderAdamW

__version__ = "0.1.0"

__all__ = [
    "AdapterConfig",
    "MagnitudeMask",
    "MagnitudeMaskAdamW",
    "PatchReport",
    "add_adapters",
    "ia3_linear",
    "is_patched",
    "load_adapters",
    "lora_linear",
    "patch",
    "remove_adapters",
    "save_adapters",
    "FastPeftCallback",
    "Spider",
    "SpiderAdamW",
    "SpiderCallback",
    "unpatch",
    "__version__",
]


def __getattr__(name: str):
    # The callbacks subclass transformers' TrainerCallback: import transformers on first use.
    if name == "SpiderCallback":
        from .spider import SpiderCallback

        return SpiderCallback
    if name == "FastPeftCallback":
        from .trainer_callback import FastPeftCallback

        return FastPeftCallback
    raise AttributeError(f"module 'fastpeft' has no attribute {name!r}")
