"""Language-model linear names (PEFT targets) and LoRA wrapping with non-identity init."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..model_structure import find_language_model
from ..model_structure import unwrap_peft as _unwrap_peft
from ._common import _seeded


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
