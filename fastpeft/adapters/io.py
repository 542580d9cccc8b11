"""Saving and loading fastpeft adapters: adapter_model.safetensors + adapter_config.json.

The layout follows PEFT's (weights only, by full parameter name, plus a JSON config), so a
checkpoint folder holds nothing of the base model. Loading rebuilds the adapters on a fresh base
model from the config and then loads the weights strictly: the round trip is exact.
"""

import json
from pathlib import Path

import torch
import torch.nn as nn

from .config import AdapterConfig
from .placement import (
    CONFIG_ATTR,
    adapter_state_dict,
    add_adapters,
    has_adapters,
    remove_adapters,
)

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
FORMAT = "fastpeft-bottleneck-adapter"


def save_adapters(model: nn.Module, directory) -> Path:
    """Write the adapter weights and config of `model` into `directory` (created if missing)."""
    from safetensors.torch import save_file

    if not has_adapters(model):
        raise ValueError("model has no fastpeft adapters to save (call add_adapters first)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().contiguous().cpu() for n, p in adapter_state_dict(model).items()}
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": FORMAT})
    config = getattr(model, CONFIG_ATTR).to_dict()
    payload = {"format": FORMAT, "base_model_class": type(model).__name__, "config": config}
    (directory / CONFIG_NAME).write_text(json.dumps(payload, indent=2) + "\n")
    return directory


def load_adapters(
    model: nn.Module, directory, *, decoder_layers: nn.ModuleList | None = None, fused: bool = True
) -> nn.Module:
    """Rebuild the adapters saved in `directory` on `model` (a base model without adapters)."""
    directory = Path(directory)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"directory {str(directory)!r} has no {name}")
    payload = json.loads((directory / CONFIG_NAME).read_text())
    if payload.get("format") != FORMAT:
        raise ValueError(f"{directory / CONFIG_NAME} is not a fastpeft adapter config")
    saved = AdapterConfig.from_dict(payload["config"])
    config = AdapterConfig.from_dict({**saved.to_dict(), "placements": []})
    add_adapters(model, config, decoder_layers=decoder_layers, fused=fused)
    try:
        _load_weights(model, directory, config, saved, payload["base_model_class"])
    except Exception:
        remove_adapters(model)  # a failed load leaves the model as it was
        raise
    return model


def _load_weights(model, directory: Path, config, saved, saved_class: str) -> None:
    from safetensors.torch import load_file

    if config.placements != saved.placements:
        raise ValueError(
            f"adapters saved at {len(saved.placements)} places do not fit this model "
            f"({len(config.placements)} places): was it saved from a {saved_class}?"
        )
    weights = load_file(str(directory / WEIGHTS_NAME))
    params = adapter_state_dict(model)
    missing, unexpected = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
    if missing or unexpected:
        raise ValueError(f"adapter weights mismatch: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for name, param in params.items():
            if weights[name].shape != param.shape:
                saved_shape = tuple(weights[name].shape)
                raise ValueError(f"{name}: saved shape {saved_shape} != {tuple(param.shape)}")
            param.copy_(weights[name])
