"""Shared by the MLLM tests: the four tiny families, perturbed (non-identity) trainable weights,
fused-call counts, and reference position ids for prefix tuning on M-RoPE models."""

import torch

from fastpeft import testing
from fastpeft.patching import base

# family: (factory, batch builder)
FAMILY_BUILDERS = {
    "llava": (testing.tiny_llava, testing.llava_batch),
    "qwen2_vl": (testing.tiny_qwen2_vl, testing.qwen2_vl_batch),
    "qwen2_5_vl": (testing.tiny_qwen2_5_vl, testing.qwen2_vl_batch),
    "idefics3": (testing.tiny_idefics3, testing.idefics3_batch),
}


def perturb_trainable(model: torch.nn.Module, seed: int = 0) -> None:
    """Move every trainable tensor away from its init (PEFT starts LoRA at B = 0 and IA3 at 1:
    identity layers would let a wrong kernel pass), the same way for the same names."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.device, p.dtype))


def fused_calls(model: torch.nn.Module) -> int:
    return sum(base.state_of(m).fused_calls for m in model.modules() if base.is_patched(m))


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def mrope_reference_kwargs(model: torch.nn.Module, batch: dict) -> dict:
    """Position ids that make unpatched PEFT prefix tuning right on an M-RoPE model: the model's
    own positions for the real tokens (PEFT shifts given position ids by the prefix length)."""
    owner = next((m for m in model.modules() if hasattr(m, "get_rope_index")), None)
    if owner is None or "image_grid_thw" not in batch:
        return {}
    positions, _ = owner.get_rope_index(
        batch["input_ids"],
        mm_token_type_ids=batch["mm_token_type_ids"],
        image_grid_thw=batch["image_grid_thw"],
        attention_mask=batch["attention_mask"],
    )
    return {"position_ids": positions}
