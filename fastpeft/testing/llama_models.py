"""Tiny Llama-based models: text-only Llama, LLaVA (CLIP + projector + Llama), Idefics3.

Every factory also takes the text-model and build arguments of
:func:`~fastpeft.testing._common._text_and_build` (keyword only: ``hidden_size``, ``num_layers``,
``vocab_size``, ``num_heads``, ``num_kv_heads``, ``intermediate_size``, ``dtype``, ``seed``,
``attn_implementation``), so their defaults live in one place.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ._common import _build, _text_and_build


def tiny_llama(**text_and_build: Any) -> nn.Module:
    """A randomly initialised ``LlamaForCausalLM`` (GQA, intermediate 3·hidden by default).

    Built in fp32 under ``seed`` (the caller's RNG state is left untouched), then cast to
    ``dtype``. Returned as constructed, i.e. in train mode (the base model has no dropout; LoRA
    dropout needs train mode; call ``.eval()`` where that matters). Ids 0/1/2 are pad/bos/eos.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    text, build = _text_and_build(**text_and_build)
    return _build(LlamaForCausalLM, LlamaConfig(**text), **build)


def llava_config(text: dict, hidden: int, layers: int, heads: int, mlp: int, image: int, patch):
    """A `LlavaConfig`: a CLIP vision tower (`hidden`, `layers`, `heads`, `mlp`; `image` pixels
    in `patch`-pixel patches), LLaVA-1.5's projector and feature choice (second-to-last layer,
    CLS dropped), and a Llama text model from the `text` kwargs. The image token is the last id
    of the vocabulary."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if image % patch:
        raise ValueError(f"image_size={image} must be a multiple of patch_size={patch}")
    vision = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image,
        patch_size=patch,
        projection_dim=hidden,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=LlamaConfig(**text),
        image_token_index=text["vocab_size"] - 1,
        image_seq_length=(image // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )


def tiny_llava(
    *,
    image_size: int = 28,
    patch_size: int = 14,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    vision_heads: int = 2,
    **text_and_build: Any,
) -> nn.Module:
    """A randomly initialised ``LlavaForConditionalGeneration``: CLIP vision tower + 2-layer GELU
    projector + Llama text model.

    The image token is ``vocab_size - 1`` (``config.image_token_id``); each image of
    ``[3, image_size, image_size]`` becomes ``(image_size // patch_size) ** 2`` tokens (4 by
    default). Features come from the vision tower's second-to-last hidden state (LLaVA's default).
    Built in fp32 under ``seed``, cast to ``dtype``, returned in train mode.
    """
    from transformers import LlavaForConditionalGeneration

    text, build = _text_and_build(**text_and_build)
    config = llava_config(
        text, vision_hidden_size, vision_layers, vision_heads, 2 * vision_hidden_size,
        image_size, patch_size,
    )  # fmt: skip
    return _build(LlavaForConditionalGeneration, config, **build)


def tiny_idefics3(
    *,
    image_size: int = 32,
    patch_size: int = 8,
    scale_factor: int = 2,
    **text_and_build: Any,
) -> nn.Module:
    """A randomly initialised ``Idefics3ForConditionalGeneration`` (SmolVLM's architecture): a
    SigLIP-style vision model, a pixel-shuffle + linear connector, a Llama text model.

    The image token is ``vocab_size - 1``; each image of ``[3, image_size, image_size]`` becomes
    ``(image_size // patch_size) ** 2 // scale_factor ** 2`` tokens (4 by default). Built in fp32
    under ``seed``, cast to ``dtype``, returned in train mode.
    """
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, LlamaConfig
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    side = image_size // patch_size
    if image_size % patch_size or side % scale_factor:
        raise ValueError(
            f"image_size={image_size} must be a multiple of patch_size={patch_size} giving a "
            f"patch grid divisible by scale_factor={scale_factor}"
        )
    text, build = _text_and_build(**text_and_build)
    vision = Idefics3VisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=image_size,
        patch_size=patch_size,
    )
    config = Idefics3Config(
        text_config=LlamaConfig(**text),
        vision_config=vision,
        scale_factor=scale_factor,
        image_token_id=text["vocab_size"] - 1,
        tie_word_embeddings=False,
    )
    return _build(Idefics3ForConditionalGeneration, config, **build)
