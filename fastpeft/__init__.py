"""fastpeft: fused kernels for parameter-efficient fine-tuning of multimodal LLMs.

import fastpeft
report = fastpeft.patch(peft_model)   # same numbers as PEFT, faster, less memory
fastpeft.unpatch(peft_model)
"""

from .functional import lora_linear
from .patch import PatchReport, is_patched, patch, unpatch

__version__ = "0.1.0"

__all__ = ["PatchReport", "is_patched", "lora_linear", "patch", "unpatch", "__version__"]
