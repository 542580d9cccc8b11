"""Meta tensors for driving the Triton host code without memory or a GPU."""

import torch

BASE_DTYPE = torch.bfloat16  # the headline cases' base model dtype
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def meta(*shape: int, dtype=BASE_DTYPE) -> torch.Tensor:
    return torch.empty(shape, device="meta", dtype=dtype)


def seeds(count: int, dropout: float) -> torch.Tensor | None:
    return meta(count, dtype=torch.int64) if dropout > 0 else None
