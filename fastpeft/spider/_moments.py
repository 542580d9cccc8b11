"""The θ₀ statistics SPIDER computes once per tensor group."""

from collections.abc import Sequence

import torch

from .. import _ext
from ..torch_path import importance as torch_impl


def moments(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """[n, 3] float64 rows (Σ|x|, Σx², numel): fastpeft._C.abs_moments where it runs (a fixed
    reduction order), else multi-tensor torch norms. Used once, for the θ₀ statistics."""
    tensors = list(tensors)
    if not tensors:
        return torch.zeros((0, 3), dtype=torch.float64)
    device = tensors[0].device
    extension = _ext.load()
    if extension is not None and (device.type == "cpu" or extension.has_cuda()):
        return _ext.abs_moments(tensors)
    numels = torch.tensor([t.numel() for t in tensors], dtype=torch.float64).to(device)
    return torch_impl.moments(tensors, numels)
