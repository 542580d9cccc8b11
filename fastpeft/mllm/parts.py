"""The parts of a multimodal LLM and Paper A's configuration space (SPEC §4–§5).

Parts are found by structure (attribute layout), not by class-name lists: the language model's
decoder stack, the vision tower and the connector (the vision-to-language projector). Target
selection only ever returns modules of the language model's decoder layers: never the vision
tower (which has its own q_proj/k_proj/...), never the connector, never lm_head.
"""

import torch.nn as nn

from ..model_structure import find_language_model, unwrap_peft

METHODS = ("lora", "ia3", "adapter")
LOCATIONS = ("attention", "mlp", "both")
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")
# Paper A's IA3 targets: k and v (output scaling) and down (input scaling: feed-forward).
_IA3 = {"attention": ("k_proj", "v_proj"), "mlp": ("down_proj",)}
_VISION_ATTRS = ("vision_tower", "visual", "vision_model")
_CONNECTOR_ATTRS = ("multi_modal_projector", "connector")


def language_model(model: nn.Module) -> nn.Module:
    """The language model's decoder stack (the module holding `.layers`)."""
    return find_language_model(model)


def _containers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    base = unwrap_peft(model)
    inner = getattr(base, "model", None)
    found = [("model.", inner)] if isinstance(inner, nn.Module) else []
    return found + [("", base)]


def _find_attr(model: nn.Module, attrs: tuple[str, ...], what: str) -> nn.Module:
    for _, container in _containers(model):
        for attr in attrs:
            module = getattr(container, attr, None)
            if isinstance(module, nn.Module):
                return module
    looked = ", ".join(f"{p}{a}" for p, _ in _containers(model) for a in attrs)
    raise ValueError(
        f"cannot find the {what} of {type(unwrap_peft(model)).__name__} (looked for {looked})"
    )


def vision_tower(model: nn.Module) -> nn.Module:
    """LLaVA's `vision_tower`, Qwen2-VL's `visual`, Idefics3's `vision_model`."""
    return _find_attr(model, _VISION_ATTRS, "vision tower")


def connector(model: nn.Module) -> nn.Module:
    """The vision-to-language projector: LLaVA's `multi_modal_projector`, Idefics3's `connector`,
    Qwen2-VL's `merger` (inside the vision tower)."""
    try:
        return _find_attr(model, _CONNECTOR_ATTRS, "connector")
    except ValueError as missing:
        try:
            merger = getattr(vision_tower(model), "merger", None)
        except ValueError:
            merger = None
        if isinstance(merger, nn.Module):
            return merger
        raise ValueError(f"{missing.args[0][:-1]}, <vision tower>.merger)") from None


def leaf_names(method: str, location: str) -> tuple[str, ...]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if location not in LOCATIONS:
        raise ValueError(f"location must be one of {LOCATIONS}, got {location!r}")
    parts = ("attention", "mlp") if location == "both" else (location,)
    if method == "ia3":
        return tuple(n for part in parts for n in _IA3[part])
    table = {"attention": _ATTENTION, "mlp": _MLP}
    if method == "adapter":  # fastpeft adapters: o_proj (post) on attention; Paper A's MLP trio
        table = {"attention": ("o_proj",), "mlp": _MLP}
    return tuple(n for part in parts for n in table[part])


def target_modules(model: nn.Module, method: str = "lora", location: str = "both") -> list[str]:
    """Full names (relative to the unwrapped base model) of the language model's linears for
    `method` at `location`; usable directly as PEFT `target_modules`."""
    leaves = leaf_names(method, location)
    base = unwrap_peft(model)
    names = {id(m): n for n, m in base.named_modules()}
    found = []
    for layer in language_model(base).layers:
        for name, module in layer.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            is_linear = isinstance(module, nn.Linear) or hasattr(module, "base_layer")
            if leaf in leaves and is_linear:
                found.append(names[id(module)])
    if not found:
        raise ValueError(f"no {leaves} linears in the language model of {type(base).__name__}")
    return found


def ia3_feedforward_modules(model: nn.Module, location: str = "both") -> list[str]:
    """The IA3 targets that scale their input (down_proj), for PEFT's `feedforward_modules`."""
    if location == "attention":
        return []
    return [n for n in target_modules(model, "ia3", location) if n.endswith("down_proj")]


def set_connector_trainable(model: nn.Module, trainable: bool = True) -> int:
    """Make the connector (fully) trainable or frozen; returns its parameter count.

    Works before and after PEFT wrapping (PEFT freezes it; Paper A re-enables it)."""
    module = connector(model)
    module.requires_grad_(trainable)
    return sum(p.numel() for p in module.parameters())


def param_groups(model: nn.Module, lr: float, connector_lr: float | None = None) -> list[dict]:
    """Optimizer groups: trainable connector parameters at `connector_lr` (Paper A: 2e-5), every
    other trainable parameter at `lr`. Empty groups are left out."""
    try:
        in_connector = {id(p) for p in connector(model).parameters()}
    except ValueError:
        in_connector = set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) not in in_connector], "lr": lr},
        {
            "params": [p for p in trainable if id(p) in in_connector],
            "lr": lr if connector_lr is None else connector_lr,
        },
    ]
    return [g for g in groups if g["params"]]
