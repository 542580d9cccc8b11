"""Training batches for the tiny text-only and LLaVA-style models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._common import _FIRST_TEXT_ID, BOS_ID


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def _text_tokens(g: torch.Generator, shape: Sequence[int], vocab_size: int, reserved: int) -> Any:
    """Random ordinary text ids in [_FIRST_TEXT_ID, vocab_size - reserved)."""
    hi = vocab_size - reserved
    if hi <= _FIRST_TEXT_ID:
        raise ValueError(f"vocab_size={vocab_size} leaves no ordinary text tokens")
    return torch.randint(_FIRST_TEXT_ID, hi, tuple(shape), generator=g)


def causal_lm_batch(
    model: nn.Module, batch_size: int = 2, seq_len: int = 16, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A text-only batch: ``input_ids`` [B, S] (bos + random ordinary ids), ``attention_mask``
    [B, S] of ones, ``labels`` = ``input_ids`` (HF shifts them inside the loss), on the model's
    device."""
    device, _ = _model_device_dtype(model)
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(seed)
    ids = _text_tokens(g, (batch_size, seq_len), vocab, reserved=4)
    ids[:, 0] = BOS_ID
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    return {k: v.to(device) for k, v in batch.items()}


def _image_first_batch(
    model: nn.Module,
    batch_size: int,
    seq_len: int,
    seed: int,
    n_img: int,
    pixel_shape: tuple[int, ...],
) -> dict[str, torch.Tensor]:
    """Rows ``[bos, <image> × n_img, text...]`` with labels -100 on the image tokens, and random
    normal ``pixel_values`` [B, *pixel_shape]: drawn after the ids from the one `seed` generator,
    in fp32, then cast to the model's dtype (so batches of one seed agree across dtypes)."""
    device, dtype = _model_device_dtype(model)
    config = model.config
    if seq_len < n_img + 2:
        raise ValueError(f"seq_len={seq_len} too short for {n_img} image tokens + bos + text")
    image_id = config.image_token_id
    g = torch.Generator().manual_seed(seed)
    ids = _text_tokens(g, (batch_size, seq_len), config.text_config.vocab_size, reserved=1)
    ids[:, 0] = BOS_ID
    ids[:, 1 : 1 + n_img] = image_id
    pixel_values = torch.randn(batch_size, *pixel_shape, generator=g)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": ids.masked_fill(ids == image_id, -100).to(device),
        "pixel_values": pixel_values.to(device=device, dtype=dtype),
    }


def llava_image_tokens(config: Any) -> int:
    """Number of placeholder tokens (= features) one image produces in a LLaVA model."""
    v = config.vision_config
    n = (v.image_size // v.patch_size) ** 2
    return n + 1 if config.vision_feature_select_strategy == "full" else n


def llava_batch(
    model: nn.Module, batch_size: int = 2, seq_len: int = 16, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A LLaVA training batch with one image per sample.

    ``seq_len`` counts every position, image placeholders included: each row is
    ``[bos, <image> × n_img, text × (seq_len - 1 - n_img)]`` with ``n_img = llava_image_tokens``.
    Returns ``input_ids``/``attention_mask``/``labels`` [B, S] (labels = ids, -100 on image tokens)
    and ``pixel_values`` [B, 3, H, W] in the model's dtype (drawn in fp32, then cast, so batches of
    one seed agree across dtypes).
    """
    size = model.config.vision_config.image_size
    n_img = llava_image_tokens(model.config)
    return _image_first_batch(model, batch_size, seq_len, seed, n_img, (3, size, size))


def idefics3_image_tokens(config: Any) -> int:
    """Number of placeholder tokens (= features) one image produces in an Idefics3 model."""
    v = config.vision_config
    return (v.image_size // v.patch_size) ** 2 // config.scale_factor**2


def idefics3_batch(
    model: nn.Module, batch_size: int = 2, seq_len: int = 16, seed: int = 0
) -> dict[str, torch.Tensor]:
    """An Idefics3 training batch with one image per sample, laid out like :func:`llava_batch`
    (``[bos, <image> × n_img, text...]``), with ``pixel_values`` [B, 1, 3, H, W] (Idefics3 takes
    a list of images per sample; all-zero images count as padding, so they are random normal)."""
    size = model.config.vision_config.image_size
    n_img = idefics3_image_tokens(model.config)
    return _image_first_batch(model, batch_size, seq_len, seed, n_img, (1, 3, size, size))
