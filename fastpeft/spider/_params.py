"""Parameter bookkeeping shared by Spider and MagnitudeMask: which tensors are tracked, their
local (per-rank) storage under FSDP2, and the all-reduce over the shard groups."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

ModelOrParams = nn.Module | Iterable[torch.Tensor] | Iterable[tuple[str, torch.Tensor]]


def collect(model_or_params: ModelOrParams) -> list[tuple[str, torch.Tensor]]:
    """Trainable parameters as (name, parameter): a module's ``named_parameters()`` (shared
    parameters once), or an iterable of tensors (named "0", "1", ...) or of (name, tensor) pairs;
    tensors with ``requires_grad=False`` are dropped."""
    if isinstance(model_or_params, nn.Module):
        items = list(model_or_params.named_parameters())
    else:
        items = []
        for i, item in enumerate(model_or_params):
            items.append(item if isinstance(item, tuple) else (str(i), item))
    seen: set[int] = set()
    out = []
    for name, p in items:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(p).__name__}")
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


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
