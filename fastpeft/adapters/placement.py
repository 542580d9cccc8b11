"""Inserting bottleneck adapters into a model's language model, and taking them out again.

An adapter lives as a child of the module it adapts (`<module>.fastpeft_pre_adapter`, ...) and is
applied by a forward (pre-)hook, so the base model's parameter names are untouched and removal
is exact. Hooks are identified by function, not by handle, so deep-copied models work too.
"""

import torch
import torch.nn as nn

from .. import registry
from ..model_structure import find_language_model
from ..patching import engine
from .config import AdapterConfig
from .hooks import HOOKS
from .modules import BottleneckAdapter

ADAPTER_ATTRS = {
    "pre": "fastpeft_pre_adapter",
    "post": "fastpeft_post_adapter",
    "parallel": "fastpeft_parallel_adapter",
}
CONFIG_ATTR = "_fastpeft_adapter_config"
FROZEN_ATTR = "_fastpeft_requires_grad_before_adapters"


def _placement_names(config: AdapterConfig) -> list[tuple[str, str]]:
    pairs = [("pre", n) for n in config.pre_modules] + [("post", n) for n in config.post_modules]
    return pairs + [("parallel", n) for n in config.parallel_modules]


def _find_in_layer(layer: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in layer.named_modules() if n == name or n.endswith("." + name)]


def _check_names(layer: nn.Module, config: AdapterConfig) -> None:
    for kind, name in _placement_names(config):
        found = _find_in_layer(layer, name)
        if len(found) != 1:
            linears = [n for n, m in layer.named_modules() if isinstance(m, nn.Linear)]
            what = "no module" if not found else f"{len(found)} modules"
            raise ValueError(
                f"{kind}_modules: {what} named {name!r} in decoder layer 0 (a name must match "
                f"exactly one submodule); its linear modules are {linears}"
            )
        module = found[0][1]
        if not isinstance(getattr(module, "in_features", None), int):
            raise ValueError(f"{kind}_modules: {name!r} is not a linear layer")


def has_adapters(model: nn.Module) -> bool:
    return hasattr(model, CONFIG_ATTR)


def add_adapters(
    model: nn.Module,
    config: AdapterConfig,
    *,
    decoder_layers: nn.ModuleList | None = None,
    fused: bool = True,
) -> nn.Module:
    """Insert bottleneck adapters into the language model of `model` (in place) and return it.

    Works on LLaVA, Qwen2-VL / Qwen2.5-VL and Llama-family causal LMs (the decoder layers are found
    by structure; pass `decoder_layers=` for other models). Adapters never go into the vision
    tower or the connector. Every pre-existing parameter is frozen (their previous flags are
    restored by `remove_adapters`); only adapter weights train. With `fused=True` the adapters run
    fastpeft's fused kernels (backend "auto"); `False` keeps the eager reference modules.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, AdapterConfig):
        raise TypeError(f"config must be a fastpeft.AdapterConfig, got {type(config).__name__}")
    if has_adapters(model):
        raise ValueError("model already has fastpeft adapters; call remove_adapters(model) first")
    layers = find_language_model(model).layers if decoder_layers is None else decoder_layers
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError("decoder_layers must be a non-empty nn.ModuleList of decoder layers")
    indices = range(len(layers)) if config.layers is None else config.layers
    bad = [i for i in indices if not -len(layers) <= i < len(layers)]
    if bad:
        raise ValueError(f"layers: indices {bad} out of range for {len(layers)} decoder layers")
    _check_names(layers[0], config)

    setattr(model, FROZEN_ATTR, {n: p.requires_grad for n, p in model.named_parameters()})
    model.requires_grad_(False)
    full_names = {id(m): n for n, m in model.named_modules()}
    placements = []
    for index in sorted({i % len(layers) for i in indices}):
        for kind, name in _placement_names(config):
            (_, module), *_ = _find_in_layer(layers[index], name)
            weight = module.weight
            dim = module.out_features if kind == "post" else module.in_features
            out_dim = module.out_features if kind == "parallel" else dim
            dtype = BottleneckAdapter.resolve_dtype(config, weight.dtype)
            adapter = BottleneckAdapter(dim, config, dtype, weight.device, out_dim=out_dim)
            module.add_module(ADAPTER_ATTRS[kind], adapter)
            if kind == "pre":
                module.register_forward_pre_hook(HOOKS[kind])
            else:
                module.register_forward_hook(HOOKS[kind])
            placements.append(f"{full_names[id(module)]}:{kind}")
    config.placements = tuple(placements)
    setattr(model, CONFIG_ATTR, config)
    if fused:
        engine.run(model, _adapter_methods(), "auto", strict=False)
    return model


def _adapter_methods() -> list[registry.Method]:
    return [registry.get(name) for name in registry.ADAPTER_METHODS]


def adapter_modules(model: nn.Module) -> list[tuple[str, BottleneckAdapter]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BottleneckAdapter)]


def remove_adapters(model: nn.Module) -> nn.Module:
    """Take out every fastpeft adapter and hook; restore the parameters' requires_grad flags.
    Only the adapters' fused forwards are undone: patched LoRA or IA3 layers stay patched."""
    if not has_adapters(model):
        raise ValueError("model has no fastpeft adapters (add_adapters was not called on it)")
    engine.unpatch(model, registry.ADAPTER_METHODS)
    ours = set(HOOKS.values())
    for module in list(model.modules()):
        for attr in ADAPTER_ATTRS.values():
            if attr in module._modules:
                del module._modules[attr]
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key in [k for k, fn in hooks.items() if fn in ours]:
                del hooks[key]
    flags = getattr(model, FROZEN_ATTR)
    for name, param in model.named_parameters():
        param.requires_grad_(flags.get(name, param.requires_grad))
    delattr(model, FROZEN_ATTR)
    delattr(model, CONFIG_ATTR)
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights of `model`, by their full parameter names."""
    attrs = tuple(ADAPTER_ATTRS.values())
    return {n: p for n, p in model.named_parameters() if any(a in n for a in attrs)}
