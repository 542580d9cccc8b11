"""Finding parts of an HF (multimodal) model by structure: the language model decoder stack."""

from typing import Any

import torch.nn as nn


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The base model inside a PeftModel (the model itself otherwise)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def find_language_model(model: nn.Module) -> nn.Module:
    """The decoder stack (the module with ``layers``) of the language model inside ``model``.

    LLaVA / Qwen2-VL (transformers 5.x): ``model.model.language_model``; Llama: ``model.model``;
    older layouts (``model.language_model``) are tried too. A PeftModel is unwrapped first. The
    vision tower is never returned: its encoder's ``layers`` live under other names.
    """
    base = unwrap_peft(model)
    for path in ("model.language_model", "language_model", "model", "language_model.model"):
        mod: Any = base
        for attr in path.split("."):
            mod = getattr(mod, attr, None)
            if not isinstance(mod, nn.Module):
                break
        if isinstance(mod, nn.Module) and isinstance(getattr(mod, "layers", None), nn.ModuleList):
            return mod
    raise ValueError(
        f"cannot find the language model's decoder layers in {type(base).__name__} (looked for "
        "model.language_model.layers, language_model.layers, model.layers); pass them explicitly "
        "as decoder_layers=<the nn.ModuleList of decoder layers>"
    )
