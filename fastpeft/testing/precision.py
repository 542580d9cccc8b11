"""fp64 twins of models and batches: the higher-precision references that error budgets are
measured against (`fastpeft.tolerance.assert_within_reference_budget`)."""

from __future__ import annotations

import copy

import torch


def fp64_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `model` with every floating parameter and buffer in fp64 (same values)."""
    return copy.deepcopy(model).to(torch.float64)


def fp64_batch(batch: dict) -> dict:
    """`batch` with its floating tensors (pixel values, masks given as floats) in fp64; token ids,
    grids and everything else unchanged."""
    return {
        key: value.to(torch.float64)
        if isinstance(value, torch.Tensor) and value.is_floating_point()
        else value
        for key, value in batch.items()
    }


def forward_backward(model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """One forward and backward of `model` on `batch`: ``{"logits", "loss", "grad <name>"...}``
    for every trainable parameter (gradients cleared first), ready for the error-budget checks."""
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    results = {"logits": out.logits.detach(), "loss": out.loss.detach()}
    for name, param in model.named_parameters():
        if param.requires_grad and param.grad is not None:
            results[f"grad {name}"] = param.grad.detach().clone()
    return results


def fp64_forward_backward(model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """`forward_backward` of an unpatched fp64 copy of `model` (the model itself is untouched):
    stock PyTorch / PEFT at higher precision, the reference of an error budget."""
    from ..patch import unpatch

    twin = fp64_copy(model)
    unpatch(twin)
    return forward_backward(twin, fp64_batch(batch))
