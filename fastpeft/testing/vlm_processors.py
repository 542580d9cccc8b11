"""Real Hugging Face processors for the tiny vision-language models, built locally.

A trainer that takes raw chats and images (TRL's ``SFTTrainer`` with a ``processing_class``) needs
the model's processor: a tokenizer, an image processor and a chat template. Hub checkpoints ship
theirs; the tiny models here have none and nothing may be downloaded, so this builds them from the
model's config: a word-level tokenizer over :data:`CAPTION_WORDS` plus the model's special tokens
at the config's ids, the model family's own image processor sized to the tiny vision tower, and a
plain ``USER: … ASSISTANT: …`` chat template. Everything past construction (image-token
expansion, pixel values, ``image_grid_thw``, ``mm_token_type_ids``) is the real processor's code.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ._common import BOS_ID, EOS_ID, PAD_ID

# Every word a caption chat uses (fastpeft.testing.caption_chats), after the pad/bos/eos ids.
CAPTION_WORDS = (
    "<unk>", "USER:", "ASSISTANT:", "what", "colour", "and", "where", "?",
    "red", "green", "blue", "yellow", "top-left", "top-right", "bottom-left", "bottom-right",
)  # fmt: skip

# Content parts are {"type": "image"} or {"type": "text", "text": ...}, as TRL and the processors'
# apply_chat_template pass them; each image part becomes the family's image placeholder.
_CHAT_TEMPLATE = (
    "{{ bos_token }} {% for m in messages %}"
    "{% if m['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}IMAGE {% else %}"
    "{{ c['text'] }} {% endif %}{% endfor %}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)


def _tokenizer(special: dict[str, int]) -> Any:
    """A fast word-level tokenizer: pad/bos/eos at 0/1/2, CAPTION_WORDS after them and the
    model's `special` tokens (name → id, at the top of its vocabulary) as added special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD_ID, "<s>": BOS_ID, "</s>": EOS_ID}
    vocab.update({w: len(vocab) + i for i, w in enumerate(CAPTION_WORDS)})
    clash = {t: i for t, i in special.items() if i < len(vocab)}
    if clash:
        raise ValueError(f"special token ids {clash} collide with the caption words' ids")
    vocab.update(special)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(special)})
    return tokenizer


def _llava_processor(config: Any) -> Any:
    from transformers import CLIPImageProcessor, LlavaProcessor

    vision = config.vision_config
    size = vision.image_size
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=[0.5] * 3,  # back to the [-1, 1] range the synthetic scenes were drawn in
        image_std=[0.5] * 3,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=_tokenizer({"<image>": config.image_token_id}),
        chat_template=_CHAT_TEMPLATE.replace("IMAGE", "<image>"),
        patch_size=vision.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,  # CLIP's CLS position, which "default" drops
        image_token="<image>",
    )


def _qwen_processor_class(processor_class: type) -> type:
    """`processor_class` accepting ``video_processor=None``.

    transformers' ProcessorMixin checks every attribute against its base class, and the video
    processor's base class only exists with torchvision installed, which has no build for this
    CPU torch. Images never touch the video processor, so the tiny processors go without one;
    every other check and all of the processing stay the library's."""

    class WithoutVideo(processor_class):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    WithoutVideo.__name__ = WithoutVideo.__qualname__ = processor_class.__name__
    return WithoutVideo


_QWEN_IMAGE = "<|vision_start|> <|image_pad|> <|vision_end|>"  # one image's placeholder span


def _qwen_processor(config: Any, processor_class: type) -> Any:
    from transformers import Qwen2VLImageProcessor

    vision = config.vision_config
    side = processor_image_size(config)
    image_processor = Qwen2VLImageProcessor(
        patch_size=vision.patch_size,
        merge_size=vision.spatial_merge_size,
        temporal_patch_size=vision.temporal_patch_size,
        min_pixels=side * side,  # every image becomes one (side/patch)² grid
        max_pixels=side * side,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    tokens = {
        "<|vision_start|>": config.vision_start_token_id,
        "<|vision_end|>": config.vision_end_token_id,
        "<|video_pad|>": config.video_token_id,
        "<|image_pad|>": config.image_token_id,
    }
    return _qwen_processor_class(processor_class)(
        image_processor=image_processor,
        tokenizer=_tokenizer(tokens),
        chat_template=_CHAT_TEMPLATE.replace("IMAGE", _QWEN_IMAGE),
    )


def processor_image_size(config: Any) -> int:
    """The square image side (pixels) the tiny processor of a model with this config expects:
    the CLIP tower's image size for LLaVA; for Qwen2-VL / Qwen2.5-VL two merged patches a side
    (a 4×4 patch grid: 4 image tokens)."""
    if config.model_type == "llava":
        return config.vision_config.image_size
    vision = config.vision_config
    return 2 * vision.patch_size * vision.spatial_merge_size


def tiny_processor(model: nn.Module) -> Any:
    """The processor for a tiny LLaVA, Qwen2-VL or Qwen2.5-VL model of ``fastpeft.testing``
    (its config's image token ids and vision sizes): ``LlavaProcessor``, ``Qwen2VLProcessor`` or
    ``Qwen2_5_VLProcessor`` with the caption vocabulary and a chat template."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor

    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind == "llava":
        return _llava_processor(config)
    if kind == "qwen2_vl":
        return _qwen_processor(config, Qwen2VLProcessor)
    if kind == "qwen2_5_vl":
        return _qwen_processor(config, Qwen2_5_VLProcessor)
    raise ValueError(
        f"tiny_processor: model has model_type {kind!r}; it builds processors for 'llava', "
        "'qwen2_vl' and 'qwen2_5_vl' (the tiny models of fastpeft.testing)"
    )
