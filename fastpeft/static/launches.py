"""Recording the launches a method's static model issues for one case, on meta tensors."""

import inspect

import torch

from .. import registry
from ..triton_path import launch
from .compile import Launch


def static_methods() -> list[registry.Method]:
    return [m for m in registry.METHODS.values() if m.static is not None]


def record(
    method: registry.Method, model, case, weights: str, dropout: float, arch: int, resident=None
):
    """The Launches `model.launches(case, weights, dropout)` makes, configured for SM `arch`;
    `resident` answers the host code's occupancy questions (compile.resident_oracle)."""
    found: list[Launch] = []
    label = f"{case.name()} {weights} p={dropout:g}"

    def keep(kernel, grid, args, kwargs):
        grid = tuple(int(g) for g in grid)
        found.append(Launch(method.name, label, kernel, grid, tuple(args), dict(kwargs)))

    with launch.recording(launch.Target("cuda", arch), keep, resident):
        model.launches(case, weights, dropout)
    return found


def named_args(kernel, args: tuple, kwargs: dict) -> dict:
    """The launch's arguments by parameter name (ints, constexprs and tensors)."""
    names = [p.name for p in kernel.params] if hasattr(kernel, "params") else []
    if not names:
        names = list(inspect.signature(kernel.fn).parameters)
    return {**dict(zip(names, args, strict=False)), **kwargs}


def tensor_bytes(named: dict) -> int:
    """Each distinct tensor argument read or written once: the minimum DRAM traffic."""
    seen, total = set(), 0
    for value in named.values():
        if isinstance(value, torch.Tensor) and id(value) not in seen:
            seen.add(id(value))
            total += value.numel() * value.element_size()
    return total
