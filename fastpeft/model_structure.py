"""Finding parts of an HF (multimodal) model by structure: the language model decoder stack."""

import torch.nn as nn


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The base model inside a PeftModel (the model itself otherwise)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _is_decoder_stack(module: nn.Module) -> bool:
    # A text decoder owns its token embedding and a ModuleList of layers; vision encoders (CLIP,
    # SigLIP, Qwen2-VL's blocks) embed patches instead and have no `embed_tokens`.
    return isinstance(getattr(module, "layers", None), nn.ModuleList) and isinstance(
        getattr(module, "embed_tokens", None), nn.Module
    )


def find_language_model(model: nn.Module) -> nn.Module:
    """The decoder stack (the module with ``layers`` and ``embed_tokens``) of the language model
    inside ``model``, found by structure; the shallowest one when several exist.

    LLaVA / Qwen2-VL / Gemma3 (transformers 5.x): ``model.model.language_model``; Idefics3:
    ``model.model.text_model``; Llama: ``model.model``. A PeftModel is unwrapped first. The vision
    tower is never returned: its encoder has ``layers`` but no token embedding.
    """
    base = unwrap_peft(model)
    found = [(n.count("."), n, m) for n, m in base.named_modules() if _is_decoder_stack(m)]
    if found:
        return min(found, key=lambda item: (item[0], item[1]))[2]
    raise ValueError(
        f"cannot find the language model's decoder layers in {type(base).__name__} (looked for a "
        "submodule with both `layers` (an nn.ModuleList) and `embed_tokens`); pass them "
        "explicitly as decoder_layers=<the nn.ModuleList of decoder layers>"
    )
