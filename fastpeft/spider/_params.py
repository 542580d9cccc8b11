"""Parameter bookkeeping shared by Spider and MagnitudeMask: which tensors are tracked, their
local (per-rank) storage under FSDP2, and the all-reduce over the shard groups."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..patching import zero3

ModelOrParams = nn.Module | Iterable[torch.Tensor] | Iterable[tuple[str, torch.Tensor]]


def _accepted(owner: str) -> str:
    return (
        f"{owner} takes a torch.nn.Module (its parameters with requires_grad are tracked) or an "
        "iterable of tensors or of (name, tensor) pairs, e.g. model.named_parameters()"
    )


def _items(model_or_params: Any, owner: str) -> list[tuple[str, Any]]:
    """(name, value) pairs of what was passed, refusing what is clearly not parameters."""
    if isinstance(model_or_params, nn.Module):
        return list(model_or_params.named_parameters())
    got = type(model_or_params).__name__
    if isinstance(model_or_params, (str, bytes)):
        # Iterating a string would "work" one character at a time; a model name is a common slip.
        raise TypeError(
            f"{owner}: model_or_params is the string {model_or_params!r}, not a model: "
            f"{_accepted(owner)}; pass the loaded model object itself"
        )
    if isinstance(model_or_params, torch.Tensor):
        # Iterating a tensor yields its rows, views that never receive a .grad.
        raise TypeError(
            f"{owner}: model_or_params is a single tensor: {_accepted(owner)}; "
            "wrap it in a list, [tensor]"
        )
    if isinstance(model_or_params, Mapping):
        raise TypeError(
            f"{owner}: model_or_params is a mapping ({got}): {_accepted(owner)}; "
            "pass its .items() for (name, tensor) pairs"
        )
    if not isinstance(model_or_params, Iterable):
        raise TypeError(f"{owner}: model_or_params has type {got}: {_accepted(owner)}")
    items = []
    for i, item in enumerate(model_or_params):
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[0], str):
                raise TypeError(
                    f"{owner}: model_or_params[{i}] is a tuple of {len(item)} that is not a "
                    f"(name, tensor) pair: {_accepted(owner)}"
                )
            items.append(item)
        else:
            items.append((str(i), item))
    return items


def collect(
    model_or_params: ModelOrParams, owner: str = "Spider"
) -> list[tuple[str, torch.Tensor]]:
    """Trainable parameters as (name, parameter): a module's ``named_parameters()`` (shared
    parameters once), or an iterable of tensors (named "0", "1", ...) or of (name, tensor) pairs;
    tensors with ``requires_grad=False`` are dropped. Anything else raises a TypeError naming
    ``owner`` (the class being built) and what it accepts."""
    seen: set[int] = set()
    out = []
    for name, p in _items(model_or_params, owner):
        if not isinstance(p, torch.Tensor):
            raise TypeError(
                f"{owner}: parameter {name!r} has type {type(p).__name__}, not a tensor: "
                f"{_accepted(owner)}"
            )
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def warn_no_gradients(owner: str, count: int) -> None:
    """The warning of a step() that found no gradient on any of its `count` parameters."""
    warnings.warn(
        f"{owner}.step(): none of the {count} tracked parameters has a gradient (.grad is None), "
        "so nothing was updated. Call step() after loss.backward() and optimizer.step() and "
        "before the gradients are zeroed, and build it on the parameters the optimizer trains "
        "(after get_peft_model / add_adapters). A step whose batch never reached the tracked "
        "parameters is harmless.",
        UserWarning,
        stacklevel=3,
    )


def deepspeed_managed(p: torch.Tensor) -> bool:
    """True for a parameter DeepSpeed's ZeRO optimizer owns: ZeRO-3 partitions it (``ds_id``),
    ZeRO-1/2 and the bf16 optimizer link it to an fp32 master fragment (``_hp_mapping``)."""
    return zero3.is_partitioned(p) or hasattr(p, "_hp_mapping")


def refuse_deepspeed(params: list[torch.Tensor], owner: str) -> None:
    """Raise when ``params`` are DeepSpeed-managed: their ``.grad`` is not the gradient (it lives
    partitioned in the optimizer) and a value written into them is overwritten from the fp32
    master at the next step, so a plain step would silently do nothing or be undone."""
    if any(deepspeed_managed(p) for p in params):
        raise RuntimeError(
            f"{owner}: the parameters are managed by a DeepSpeed ZeRO optimizer, whose "
            "gradients and fp32 master weights this cannot read or write. Use "
            "fastpeft.spider.DeepSpeedSpider(engine) and call its step() in place of "
            "engine.step(). (The Hugging Face Trainer's DeepSpeed integration runs engine.step() "
            "inside backward, where no callback can run: SPIDER under DeepSpeed needs a loop "
            "of your own.)"
        )


def _is_dtensor(t: torch.Tensor) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The rank-local storage of a parameter or gradient (a DTensor's local shard), detached."""
    if _is_dtensor(t):
        t = t.to_local()
    return t.detach()


def shard_groups(p: torch.Tensor) -> tuple[Any, ...]:
    """Process groups over which a DTensor parameter is sharded (per-tensor sums must be
    all-reduced over each); empty for plain tensors and replicated placements."""
    if not _is_dtensor(p):
        return ()
    mesh = p.device_mesh
    return tuple(mesh.get_group(d) for d, pl in enumerate(p.placements) if pl.is_shard())


def all_reduce_(t: torch.Tensor, groups: tuple[Any, ...]) -> torch.Tensor:
    """Sum ``t`` in place over every group in turn (a sum over the product of the shard dims).
    Asynchronous on NCCL with respect to the host; a no-op without groups."""
    for g in groups:
        torch.distributed.all_reduce(t, group=g)
    return t


def check_local(name: str, t: torch.Tensor) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name}: parameters must be floating point, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(
            f"{name}: the parameter (its local shard) must be contiguous (shape {tuple(t.shape)}, "
            f"strides {t.stride()}); SPIDER updates it in place in memory order"
        )


def grad_of(p: torch.Tensor) -> torch.Tensor | None:
    """The parameter's local gradient, contiguous, or None when it has none this step."""
    g = p.grad
    if g is None:
        return None
    g = local(g)
    return g if g.is_contiguous() else g.contiguous()


def restore_tensor(dst: torch.Tensor, src: torch.Tensor, what: str) -> None:
    """Copy a saved state tensor into the live one, checking the shape."""
    if tuple(src.shape) != tuple(dst.shape):
        raise ValueError(f"{what}: saved shape {tuple(src.shape)} != {tuple(dst.shape)}")
    dst.copy_(src.to(device=dst.device, dtype=dst.dtype))
