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
    """Rebuild the adapters saved in `directory` on `model` (a base model without adapters).

    Both files are read and checked before the model is touched, so a missing, truncated or
    corrupted checkpoint raises (naming the file) with the model left exactly as it was."""
    directory = _checked_directory(directory)
    payload = _read_config(directory / CONFIG_NAME)
    weights = _read_weights(directory / WEIGHTS_NAME)
    saved = AdapterConfig.from_dict(payload["config"])
    config = AdapterConfig.from_dict({**saved.to_dict(), "placements": []})
    add_adapters(model, config, decoder_layers=decoder_layers, fused=fused)
    try:
        _load_weights(model, weights, config, saved, payload["base_model_class"])
    except Exception:
        remove_adapters(model)  # a failed load leaves the model as it was
        raise
    return model


def _checked_directory(directory) -> Path:
    path = Path(directory)
    if not path.exists():
        raise FileNotFoundError(
            f"adapter directory {str(path)!r} does not exist: pass the directory save_adapters "
            f"wrote (it holds {WEIGHTS_NAME} and {CONFIG_NAME})"
        )
    if not path.is_dir():
        hint = (
            f"pass its folder, {str(path.parent)!r}"
            if path.name in (WEIGHTS_NAME, CONFIG_NAME)
            else f"pass the directory that holds {WEIGHTS_NAME} and {CONFIG_NAME}"
        )
        raise NotADirectoryError(f"{str(path)!r} is a file, not an adapter directory: {hint}")
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"directory {str(path)!r} has no {name}: is it a folder written by save_adapters?"
            )
    return path


def _read_config(path: Path) -> dict:
    try:
        payload = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); the file is damaged: save the adapters again "
            "with save_adapters"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastpeft adapter config")
    return payload


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as error:  # its message names no file ("incomplete metadata", ...)
        raise ValueError(
            f"cannot read the adapter weights in {path}: {error}. The file is truncated or "
            "corrupted (an interrupted save or copy?): save the adapters again with save_adapters"
        ) from error


def _load_weights(model, weights: dict, config, saved, saved_class: str) -> None:
    if config.placements != saved.placements:
        raise ValueError(
            f"adapters saved at {len(saved.placements)} places do not fit this model "
            f"({len(config.placements)} places): was it saved from a {saved_class}?"
        )
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
