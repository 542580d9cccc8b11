"""Shared helpers for tests and benchmarks: tiny real HF models, input batches, LoRA wrapping and
the tolerance checks of SPEC §7.

Everything here is built locally from transformers config classes with random weights (no
downloads). transformers and peft are imported inside the functions, so importing this module (and
``fastpeft``) stays light.

Facts about transformers 5.x that the helpers rely on (checked with transformers 5.23):

- LLaVA: ``LlavaForConditionalGeneration.model`` is a ``LlavaModel`` holding ``vision_tower``
  (a CLIP vision model; its linears are ``model.vision_tower.encoder.layers.{i}.self_attn.q_proj``
  etc., so a bare ``q_proj`` suffix also hits the vision tower), ``multi_modal_projector``
  (``linear_1``/``linear_2``) and ``language_model`` (a ``LlamaModel``); ``lm_head`` sits on the
  outer model. An image gives ``(image_size // patch_size) ** 2`` features with the default
  ``vision_feature_select_strategy="default"`` (the CLS position is dropped; +1 with ``"full"``),
  and the input must hold exactly that many ``image_token_id`` placeholders per image.
- Qwen2-VL: ``Qwen2VLForConditionalGeneration.model`` holds ``visual`` (blocks + ``merger``) and
  ``language_model`` (a ``Qwen2VLTextModel``). Images are flattened patches
  ``pixel_values [sum(t*h*w), C*T*P*P]`` with ``image_grid_thw [n_images, 3]`` in patch units; each
  image takes ``t*h*w / spatial_merge_size**2`` placeholders. With ``image_grid_thw`` given, the
  forward also requires ``mm_token_type_ids`` (0 text, 1 image, 2 video) to build M-RoPE positions,
  and the text RoPE takes ``rope_parameters={"mrope_section": [...]}`` whose sections sum to
  ``head_dim // 2``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .model_structure import find_language_model
from .model_structure import unwrap_peft as _unwrap_peft
from .tolerance import (  # re-exported (see __all__): tests import them from here
    DTYPE_FLOORS,
    assert_close_fp32,
    assert_within_dtype_budget,
    tf32_disabled,
)

__all__ = [
    "DTYPE_FLOORS",
    "assert_close_fp32",
    "assert_within_dtype_budget",
    "causal_lm_batch",
    "find_language_model",
    "language_model_linear_names",
    "language_model_lora_targets",
    "llava_batch",
    "llava_image_tokens",
    "make_lora_model",
    "qwen2_vl_batch",
    "qwen2_vl_image_tokens",
    "tf32_disabled",
    "tiny_llama",
    "tiny_llava",
    "tiny_qwen2_vl",
    "tiny_qwen2_5_vl",
]

# Special token ids used by the tiny models (the text vocabularies are tiny too).
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
_FIRST_TEXT_ID = 3


# --------------------------------------------------------------------------------------------
# Tiny models
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG for the block without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _finish(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    # Built in fp32 and then cast, so the same seed gives the same weights (up to rounding) in every
    # dtype: an fp32 and a bf16 copy of one tiny model can serve as reference and subject.
    return model.to(dtype)


def _llama_text_kwargs(
    hidden_size: int,
    num_layers: int,
    vocab_size: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int | None,
) -> dict[str, Any]:
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"hidden_size={hidden_size} must divide by num_heads={num_heads}, "
            f"which must divide by num_kv_heads={num_kv_heads}"
        )
    return dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        vocab_size=vocab_size,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size or 3 * hidden_size,
        max_position_embeddings=2048,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        tie_word_embeddings=False,
    )


def tiny_llama(
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> nn.Module:
    """A randomly initialised ``LlamaForCausalLM`` (GQA, intermediate 3·hidden by default).

    Built in fp32 under ``seed`` (the caller's RNG state is left untouched), then cast to
    ``dtype``. Returned as constructed, i.e. in train mode (the base model has no dropout; LoRA
    dropout needs train mode; call ``.eval()`` where that matters). Ids 0/1/2 are pad/bos/eos.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **_llama_text_kwargs(
            hidden_size, num_layers, vocab_size, num_heads, num_kv_heads, intermediate_size
        )
    )
    with _seeded(seed):
        model = LlamaForCausalLM._from_config(config, attn_implementation=attn_implementation)
    return _finish(model, dtype)


def tiny_llava(
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    image_size: int = 28,
    patch_size: int = 14,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    vision_heads: int = 2,
    attn_implementation: str = "sdpa",
) -> nn.Module:
    """A randomly initialised ``LlavaForConditionalGeneration``: CLIP vision tower + 2-layer GELU
    projector + Llama text model.

    The image token is ``vocab_size - 1`` (``config.image_token_id``); each image of
    ``[3, image_size, image_size]`` becomes ``(image_size // patch_size) ** 2`` tokens (4 by
    default). Features come from the vision tower's second-to-last hidden state (LLaVA's default).
    Built in fp32 under ``seed``, cast to ``dtype``, returned in train mode.
    """
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    if image_size % patch_size:
        raise ValueError(f"image_size={image_size} must be a multiple of patch_size={patch_size}")
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden_size,
        intermediate_size=2 * vision_hidden_size,
        num_hidden_layers=vision_layers,
        num_attention_heads=vision_heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden_size,
    )
    text = LlamaConfig(
        **_llama_text_kwargs(
            hidden_size, num_layers, vocab_size, num_heads, num_kv_heads, intermediate_size
        )
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab_size - 1,
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    with _seeded(seed):
        model = LlavaForConditionalGeneration._from_config(
            config, attn_implementation=attn_implementation
        )
    return _finish(model, dtype)


def _mrope_section(head_dim: int) -> list[int]:
    # Same proportions as Qwen2-VL-7B ([16, 24, 24] for head_dim 128): 1/4 temporal, 3/8 h, 3/8 w.
    half = head_dim // 2
    t = max(1, half // 4)
    h = (half - t) // 2
    return [t, h, half - t - h]


def _qwen_text_kwargs(hidden_size, num_layers, vocab_size, num_heads, num_kv_heads, inter):
    head_dim = hidden_size // num_heads
    if hidden_size % num_heads or head_dim % 2 or num_heads % num_kv_heads:
        raise ValueError(f"bad head layout: hidden={hidden_size} heads={num_heads}/{num_kv_heads}")
    text = _llama_text_kwargs(hidden_size, num_layers, vocab_size, num_heads, num_kv_heads, inter)
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 1_000_000.0,
        "mrope_section": _mrope_section(head_dim),
    }
    return text


def _qwen_token_ids(vocab_size: int) -> dict[str, int]:
    return dict(
        image_token_id=vocab_size - 1,
        video_token_id=vocab_size - 2,
        vision_end_token_id=vocab_size - 3,
        vision_start_token_id=vocab_size - 4,
    )


def tiny_qwen2_vl(
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    vision_embed_dim: int = 32,
    vision_depth: int = 2,
    vision_heads: int = 2,
    patch_size: int = 14,
    spatial_merge_size: int = 2,
    temporal_patch_size: int = 2,
    attn_implementation: str = "sdpa",
) -> nn.Module:
    """A randomly initialised ``Qwen2VLForConditionalGeneration`` with a tiny vision tower and
    M-RoPE sections sized for the text head_dim.

    Special ids at the top of the vocabulary: image ``vocab_size-1``, video ``vocab_size-2``,
    vision_end ``vocab_size-3``, vision_start ``vocab_size-4``. The merger outputs ``hidden_size``.
    Built in fp32 under ``seed``, cast to ``dtype``, returned in train mode.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = _qwen_text_kwargs(
        hidden_size, num_layers, vocab_size, num_heads, num_kv_heads, intermediate_size
    )
    if (vision_embed_dim // vision_heads) % 4:
        raise ValueError("vision head dim must be a multiple of 4 (2-D axial rope)")
    vision = dict(
        depth=vision_depth,
        embed_dim=vision_embed_dim,
        hidden_size=hidden_size,
        mlp_ratio=2,
        num_heads=vision_heads,
        in_channels=3,
        patch_size=patch_size,
        spatial_merge_size=spatial_merge_size,
        temporal_patch_size=temporal_patch_size,
    )
    config = Qwen2VLConfig(text_config=text, vision_config=vision, **_qwen_token_ids(vocab_size))
    with _seeded(seed):
        model = Qwen2VLForConditionalGeneration._from_config(
            config, attn_implementation=attn_implementation
        )
    return _finish(model, dtype)


def tiny_qwen2_5_vl(
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> nn.Module:
    """A randomly initialised ``Qwen2_5_VLForConditionalGeneration`` (tiny windowed vision tower,
    patch 14, merge 2; the same special ids and batches as :func:`tiny_qwen2_vl`)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = _qwen_text_kwargs(
        hidden_size, num_layers, vocab_size, num_heads, num_kv_heads, intermediate_size
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        out_hidden_size=hidden_size,
        intermediate_size=64,
        num_heads=2,
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        fullatt_block_indexes=[1],
        window_size=56,
    )
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_qwen_token_ids(vocab_size))
    with _seeded(seed):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, attn_implementation=attn_implementation
        )
    return _finish(model, dtype)


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


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
    device, dtype = _model_device_dtype(model)
    config = model.config
    n_img = llava_image_tokens(config)
    if seq_len < n_img + 2:
        raise ValueError(f"seq_len={seq_len} too short for {n_img} image tokens + bos + text")
    vocab = config.text_config.vocab_size
    image_id = config.image_token_id
    g = torch.Generator().manual_seed(seed)
    ids = _text_tokens(g, (batch_size, seq_len), vocab, reserved=1)
    ids[:, 0] = BOS_ID
    ids[:, 1 : 1 + n_img] = image_id
    labels = ids.masked_fill(ids == image_id, -100)
    size = config.vision_config.image_size
    pixel_values = torch.randn(batch_size, 3, size, size, generator=g)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": labels.to(device),
        "pixel_values": pixel_values.to(device=device, dtype=dtype),
    }


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


# --------------------------------------------------------------------------------------------
# Target selection
# --------------------------------------------------------------------------------------------


def _linear_like(module: nn.Module) -> bool:
    # A PEFT tuner layer (lora.Linear, ia3.Linear, ...) wraps the original nn.Linear as base_layer.
    return isinstance(module, nn.Linear) or isinstance(
        getattr(module, "base_layer", None), nn.Linear
    )


def _collect_linears(module: nn.Module, prefix: str, out: list[str]) -> None:
    for name, child in module.named_children():
        full = f"{prefix}.{name}"
        if _linear_like(child):
            out.append(full)  # do not descend into a tuner layer's base_layer / lora_A / lora_B
        else:
            _collect_linears(child, full, out)


def language_model_linear_names(model: nn.Module, part: str = "all") -> list[str]:
    """Full names (relative to ``model`` itself) of every linear in the language model's decoder
    layers: q/k/v/o and gate/up/down for Llama-like models. Never the vision tower, the
    projector/merger, embeddings or ``lm_head``. On an already PEFT-wrapped model the tuner layers
    (e.g. ``lora.Linear``) are returned in place of the linears they wrap.

    ``part``: ``"all"``, ``"attn"`` (children of each layer's ``self_attn``) or ``"mlp"``.
    """
    if part not in ("all", "attn", "mlp"):
        raise ValueError(f"part must be 'all', 'attn' or 'mlp', not {part!r}")
    lm = find_language_model(model)
    names = {id(m): n for n, m in model.named_modules()}
    out: list[str] = []
    for layer in lm.layers:
        for child_name, child in layer.named_children():
            if part == "attn" and child_name != "self_attn":
                continue
            if part == "mlp" and child_name != "mlp":
                continue
            prefix = names[id(child)]
            if _linear_like(child):
                out.append(prefix)
            else:
                _collect_linears(child, prefix, out)
    return out


def language_model_lora_targets(model: nn.Module, part: str = "all") -> list[str]:
    """Like :func:`language_model_linear_names` but always relative to the unwrapped base model, so
    the list can be passed straight to ``LoraConfig(target_modules=...)`` (PEFT matches list entries
    exactly or as ``.``-suffixes; full names match exactly one module each)."""
    return language_model_linear_names(_unwrap_peft(model), part=part)


# --------------------------------------------------------------------------------------------
# LoRA wrapping
# --------------------------------------------------------------------------------------------


def make_lora_model(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    targets: Sequence[str] | str | None = None,
    init_nonzero: bool = True,
    seed: int = 0,
    autocast_adapter_dtype: bool = True,
    **lora_kwargs: Any,
) -> nn.Module:
    """Wrap ``model`` (in place, as PEFT does) with LoRA and return the ``PeftModel``.

    ``targets`` defaults to :func:`language_model_lora_targets`. With ``init_nonzero`` the adapters
    use ``init_lora_weights=False``: A and B keep ``nn.Linear``'s default (kaiming-uniform) init, so
    B ≠ 0 and the LoRA branch contributes from the start (PEFT 0.21 behaviour; if a B still comes
    out all-zero it is filled from N(0, 1/r) with a seeded generator). Adapter weights are drawn
    under ``seed`` without touching the caller's RNG. ``autocast_adapter_dtype`` is passed to
    ``get_peft_model`` (True, PEFT's default: fp32 adapters on a bf16/fp16 base; False: adapters in
    the base dtype). Extra keyword arguments go to ``LoraConfig``.
    """
    from peft import LoraConfig, get_peft_model

    if targets is None:
        targets = language_model_lora_targets(model)
    elif not isinstance(targets, str):
        targets = list(targets)
    if init_nonzero:
        lora_kwargs.setdefault("init_lora_weights", False)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, **lora_kwargs
    )
    with _seeded(seed):
        peft_model = get_peft_model(model, config, autocast_adapter_dtype=autocast_adapter_dtype)
    if init_nonzero:
        g = torch.Generator().manual_seed(seed + 1)
        for name, param in sorted(peft_model.named_parameters()):
            if ".lora_B." in name and not torch.any(param != 0):
                fill = torch.randn(param.shape, generator=g) / math.sqrt(r)
                with torch.no_grad():
                    param.copy_(fill.to(param.device, param.dtype))
    return peft_model
