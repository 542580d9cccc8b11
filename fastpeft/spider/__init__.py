"""SPIDER selective fine-tuning (SPEC §6): :class:`Spider`, :class:`SpiderAdamW` (AdamW with the
Spider step fused in), the :class:`MagnitudeMask` baseline (and :class:`MagnitudeMaskAdamW`, AdamW
with it fused in), :class:`SpiderCallback` for the Hugging Face Trainer and
:class:`DeepSpeedSpider` for a DeepSpeed engine (it imports deepspeed when built, not here).

``SpiderCallback`` is imported on first access, so importing this package does not import
transformers.
"""

from ._adamw import SpiderAdamW
from ._deepspeed import DeepSpeedSpider
from ._mask import MagnitudeMask, top_magnitude_mask
from ._mask_adamw import MagnitudeMaskAdamW
from ._spider import Spider

__all__ = [
    "DeepSpeedSpider",
    "MagnitudeMask",
    "MagnitudeMaskAdamW",
    "Spider",
    "SpiderAdamW",
    "SpiderCallback",
    "top_magnitude_mask",
]


def __getattr__(name: str):
    if name == "SpiderCallback":
        from ._callback import SpiderCallback

        return SpiderCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
