"""Tiny Qwen2-VL / Qwen2.5-VL models and their batches (flattened patches, M-RoPE inputs).

Both factories also take the text-model and build arguments of
:func:`~fastpeft.testing._common._text_and_build` (keyword only), as the Llama-based ones do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._common import BOS_ID, _build, _text_and_build
from .batches import _model_device_dtype, _text_tokens


def _mrope_section(head_dim: int) -> list[int]:
    # Same proportions as Qwen2-VL-7B ([16, 24, 24] for head_dim 128): 1/4 temporal, 3/8 h, 3/8 w.
    half = head_dim // 2
    t = max(1, half // 4)
    h = (half - t) // 2
    return [t, h, half - t - h]


def _qwen_config(config_class: type, text: dict[str, Any], vision: dict[str, Any]) -> Any:
    """A Qwen2-VL-style config: the Llama-style `text` kwargs with M-RoPE sections sized for the
    text head_dim, the `vision` tower, and the special ids at the top of the vocabulary."""
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    if head_dim % 2:
        raise ValueError(f"bad head layout: head_dim={head_dim} must be even (M-RoPE)")
    rope = {
        "rope_type": "default",
        "rope_theta": 1_000_000.0,
        "mrope_section": _mrope_section(head_dim),
    }
    vocab_size = text["vocab_size"]
    return config_class(
        text_config={**text, "rope_parameters": rope},
        vision_config=vision,
        image_token_id=vocab_size - 1,
        video_token_id=vocab_size - 2,
        vision_end_token_id=vocab_size - 3,
        vision_start_token_id=vocab_size - 4,
    )


def tiny_qwen2_vl(
    *,
    vision_embed_dim: int = 32,
    vision_depth: int = 2,
    vision_heads: int = 2,
    patch_size: int = 14,
    spatial_merge_size: int = 2,
    temporal_patch_size: int = 2,
    **text_and_build: Any,
) -> nn.Module:
    """A randomly initialised ``Qwen2VLForConditionalGeneration`` with a tiny vision tower and
    M-RoPE sections sized for the text head_dim.

    Special ids at the top of the vocabulary: image ``vocab_size-1``, video ``vocab_size-2``,
    vision_end ``vocab_size-3``, vision_start ``vocab_size-4``. The merger outputs ``hidden_size``.
    Built in fp32 under ``seed``, cast to ``dtype``, returned in train mode.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text, build = _text_and_build(**text_and_build)
    if (vision_embed_dim // vision_heads) % 4:
        raise ValueError("vision head dim must be a multiple of 4 (2-D axial rope)")
    vision = dict(
        depth=vision_depth,
        embed_dim=vision_embed_dim,
        hidden_size=text["hidden_size"],
        mlp_ratio=2,
        num_heads=vision_heads,
        in_channels=3,
        patch_size=patch_size,
        spatial_merge_size=spatial_merge_size,
        temporal_patch_size=temporal_patch_size,
    )
    config = _qwen_config(Qwen2VLConfig, text, vision)
    return _build(Qwen2VLForConditionalGeneration, config, **build)


def tiny_qwen2_5_vl(**text_and_build: Any) -> nn.Module:
    """A randomly initialised ``Qwen2_5_VLForConditionalGeneration`` (tiny windowed vision tower,
    patch 14, merge 2; the same special ids and batches as :func:`tiny_qwen2_vl`)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text, build = _text_and_build(**text_and_build)
    vision = dict(
        depth=2,
        hidden_size=32,
        out_hidden_size=text["hidden_size"],
        intermediate_size=64,
        num_heads=2,
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        fullatt_block_indexes=[1],
        window_size=56,
    )
    config = _qwen_config(Qwen2_5_VLConfig, text, vision)
    return _build(Qwen2_5_VLForConditionalGeneration, config, **build)


def qwen2_vl_image_tokens(config: Any, grid_thw: Sequence[int]) -> int:
    """Number of placeholder tokens one Qwen2-VL image of ``grid_thw`` (patch units) produces."""
    t, h, w = grid_thw
    return t * h * w // config.vision_config.spatial_merge_size**2


def qwen2_vl_batch(
    model: nn.Module,
    batch_size: int = 2,
    seq_len: int = 16,
    seed: int = 0,
    grid_hw: tuple[int, int] | Sequence[tuple[int, int]] = (4, 4),
) -> dict[str, torch.Tensor]:
    """A Qwen2-VL training batch with one image per sample.

    ``grid_hw`` is the image size in patches (multiples of ``spatial_merge_size``), either one
    ``(h, w)`` for all samples or one per sample; each image is one temporal patch group (t=1).
    ``seq_len`` counts every position: each row is ``[bos, <vision_start>, <image> × n_img,
    <vision_end>, text...]`` with ``n_img = h*w / merge**2``. Returns ``input_ids``,
    ``attention_mask``, ``labels`` (-100 on image tokens), ``mm_token_type_ids`` (1 on image tokens)
    [B, S], ``pixel_values`` [Σ h*w, 3*T*P*P] in the model's dtype and ``image_grid_thw`` [B, 3].
    """
    device, dtype = _model_device_dtype(model)
    config = model.config
    vc = config.vision_config
    grids = [tuple(grid_hw)] * batch_size if isinstance(grid_hw[0], int) else list(grid_hw)
    if len(grids) != batch_size:
        raise ValueError(f"{len(grids)} grids for batch_size={batch_size}")
    for h, w in grids:
        if h % vc.spatial_merge_size or w % vc.spatial_merge_size:
            raise ValueError(f"grid {(h, w)} must be a multiple of {vc.spatial_merge_size}")
    vocab = config.text_config.vocab_size
    g = torch.Generator().manual_seed(seed)
    ids = _text_tokens(g, (batch_size, seq_len), vocab, reserved=4)
    ids[:, 0] = BOS_ID
    for b, (h, w) in enumerate(grids):
        n_img = qwen2_vl_image_tokens(config, (1, h, w))
        if seq_len < n_img + 4:
            raise ValueError(f"seq_len={seq_len} too short for {n_img} image tokens + 4 others")
        ids[b, 1] = config.vision_start_token_id
        ids[b, 2 : 2 + n_img] = config.image_token_id
        ids[b, 2 + n_img] = config.vision_end_token_id
    is_image = ids == config.image_token_id
    patch_dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
    n_patches = sum(h * w for h, w in grids)
    pixel_values = torch.randn(n_patches, patch_dim, generator=g)
    grid_thw = torch.tensor([[1, h, w] for h, w in grids], dtype=torch.long)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": ids.masked_fill(is_image, -100).to(device),
        "mm_token_type_ids": is_image.to(torch.int32).to(device),
        "pixel_values": pixel_values.to(device=device, dtype=dtype),
        "image_grid_thw": grid_thw.to(device),
    }
