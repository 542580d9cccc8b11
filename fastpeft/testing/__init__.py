"""Shared helpers for tests and benchmarks: tiny real HF models, input batches, LoRA wrapping and
the tolerance checks of docs/methods.md#numerics.

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
- Idefics3: ``model.model`` holds ``vision_model``, ``connector`` (pixel shuffle +
  ``modality_projection``) and ``text_model`` (a ``LlamaModel``); the vision model's attention
  linears are also named q/k/v_proj. ``pixel_values`` is [B, images, C, H, W].

Modules: ``_common`` (ids, seeding), ``llama_models`` (Llama, LLaVA, Idefics3), ``qwen_models``
(Qwen2-VL, Qwen2.5-VL and their batch), ``batches`` (text, LLaVA, Idefics3 batches),
``peft_models`` (target names, LoRA wrapping), ``precision`` (fp64 twins for error budgets).
"""

from ..model_structure import find_language_model
from ..tolerance import (  # re-exported: tests import them from here
    DTYPE_FLOORS,
    REFERENCE_ERROR_FACTOR,
    assert_all_within_reference_budget,
    assert_close_fp32,
    assert_within_dtype_budget,
    assert_within_reference_budget,
    tf32_disabled,
)
from ._common import BOS_ID, EOS_ID, PAD_ID
from .batches import (
    causal_lm_batch,
    idefics3_batch,
    idefics3_image_tokens,
    llava_batch,
    llava_image_tokens,
)
from .caption_chats import caption_chats
from .llama_models import tiny_idefics3, tiny_llama, tiny_llava
from .peft_models import language_model_linear_names, language_model_lora_targets, make_lora_model
from .precision import forward_backward, fp64_batch, fp64_copy, fp64_forward_backward
from .qwen_models import qwen2_vl_batch, qwen2_vl_image_tokens, tiny_qwen2_5_vl, tiny_qwen2_vl
from .vlm_processors import processor_image_size, tiny_processor

__all__ = [
    "BOS_ID",
    "DTYPE_FLOORS",
    "EOS_ID",
    "REFERENCE_ERROR_FACTOR",
    "assert_all_within_reference_budget",
    "PAD_ID",
    "assert_close_fp32",
    "assert_within_dtype_budget",
    "assert_within_reference_budget",
    "caption_chats",
    "causal_lm_batch",
    "find_language_model",
    "fp64_batch",
    "fp64_copy",
    "fp64_forward_backward",
    "forward_backward",
    "idefics3_batch",
    "idefics3_image_tokens",
    "language_model_linear_names",
    "language_model_lora_targets",
    "llava_batch",
    "llava_image_tokens",
    "make_lora_model",
    "qwen2_vl_batch",
    "processor_image_size",
    "qwen2_vl_image_tokens",
    "tf32_disabled",
    "tiny_idefics3",
    "tiny_llama",
    "tiny_llava",
    "tiny_processor",
    "tiny_qwen2_5_vl",
    "tiny_qwen2_vl",
]
