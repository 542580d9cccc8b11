"""Prefix tuning on models with multimodal RoPE (Qwen2-VL, Qwen2.5-VL and their relatives).

PEFT's prefix tuning hands the model a KV cache holding the P virtual tokens and an attention mask
P columns longer than `input_ids`. Models that build 3-D (M-RoPE) position ids from the token
sequence (`get_rope_index`) index `input_ids` with that longer mask and fail ("The shape of the
mask [P+S] ... does not match ... [S]"); with a cached `rope_deltas` they build positions of the
wrong length instead. SPEC §4: the real tokens sit after the prefix, so their positions are the
model's own positions for the real tokens, shifted by P. This patcher computes exactly that on the
multimodal model (the module owning `get_rope_index`) whenever its cache holds only the prefix,
i.e. in training forwards and at the prefill of generation; every later decoding step is left to
the model, which continues from the `rope_deltas` set here.

Version drift: transformers 5.24 renamed the forward's `past_key_values` to `cache` (the old name
is deprecated until 5.40), so the cache is looked up under either name. What the fix needs from the
model (a forward taking `position_ids` and a cache, a `get_rope_index(input_ids, ...,
attention_mask=...)`) is checked at `patch()` time: a model without it is skipped with the reason,
never failed mid-forward.
"""

import inspect

import torch
import torch.nn as nn

from . import base

_GRID_KEYS = ("image_grid_thw", "video_grid_thw")
# The forward's cache argument: `cache` from transformers 5.24, `past_key_values` before.
CACHE_KWARGS = ("cache", "past_key_values")


def prefix_length(model: nn.Module) -> int | None:
    """The number of virtual tokens when `model` is a PeftModel with active prefix tuning."""
    configs = getattr(model, "peft_config", None)
    active = getattr(model, "active_adapter", None)
    if not isinstance(configs, dict) or not isinstance(active, str) or active not in configs:
        return None
    config = configs[active]
    if getattr(config, "peft_type", None) != "PREFIX_TUNING":  # PeftType is a str enum
        return None
    return int(config.num_virtual_tokens)


def _has_mrope(module: nn.Module) -> bool:
    return callable(getattr(module, "get_rope_index", None)) and hasattr(module, "rope_deltas")


def candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The M-RoPE multimodal modules of a prefix-tuned PeftModel (none for any other model)."""
    if prefix_length(model) is None:
        return []
    return [(name, m) for name, m in model.named_modules() if _has_mrope(m)]


def _parameters(function) -> set[str]:
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()


def ineligibility_reasons(module: nn.Module) -> list[str]:
    """Why the position fix cannot be applied to this transformers version's M-RoPE model."""
    reasons = []
    forward = _parameters(type(module).forward)
    if "position_ids" not in forward or not forward & set(CACHE_KWARGS):
        reasons.append(
            "M-RoPE model forward takes no position_ids or no cache argument "
            f"({' / '.join(CACHE_KWARGS)}): unknown transformers interface"
        )
    rope = _parameters(module.get_rope_index)
    if not {"input_ids", "attention_mask"} <= rope:
        reasons.append(
            "get_rope_index takes no input_ids or no attention_mask: unknown transformers interface"
        )
    return reasons


def _cache_of(kwargs: dict):
    for name in CACHE_KWARGS:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


def forward_for(model: nn.Module, module: nn.Module):
    """The replacement forward of `module`, bound to the prefix length of `model`."""
    prefix = prefix_length(model)

    def forward(self, *args, **kwargs):
        positions = prefix_positions(self, prefix, kwargs)
        if positions is not None:
            kwargs["position_ids"] = positions
            base.count(base.state_of(self))
        return base.original_forward(self)(*args, **kwargs)

    return forward


def prefix_positions(module: nn.Module, prefix: int, kwargs: dict) -> torch.Tensor | None:
    """Position ids [3, B, S] of the real tokens after a `prefix`-token cache, or None where the
    model's own logic is right (positions given, no cache, or a cache longer than the prefix)."""
    input_ids, cache = kwargs.get("input_ids"), _cache_of(kwargs)
    if kwargs.get("position_ids") is not None or input_ids is None or cache is None:
        return None
    if cache.get_seq_length() != prefix:
        return None
    has_media = any(kwargs.get(k) is not None for k in _GRID_KEYS)
    if has_media:
        if kwargs.get("mm_token_type_ids") is None:
            return None  # the model raises its own error naming mm_token_type_ids
        mask = kwargs.get("attention_mask")
        accepted = inspect.signature(module.get_rope_index).parameters
        skip = {"input_ids", *CACHE_KWARGS}
        extra = {k: v for k, v in kwargs.items() if k in accepted and k not in skip}
        extra["attention_mask"] = None if mask is None else mask[:, prefix:]
        positions, deltas = module.get_rope_index(input_ids, **extra)
        module.rope_deltas = deltas
        return positions + prefix
    # Text only: the positions the model infers without a stale `rope_deltas`.
    batch, length = input_ids.shape
    positions = torch.arange(prefix, prefix + length, device=input_ids.device)
    return positions.view(1, 1, length).expand(3, batch, length)
