"""LoRA's hybrid path (backend "hybrid"): the frozen base products through cuBLAS, the LoRA terms
in the Triton side kernels.

    y  = F.linear(x, W, b)                cuBLAS
    y += s · t Bᵀ                         lora_fwd_kernel, BASE_IN_Y: in place, one pass over y
    dx = dy W                             cuBLAS
    dx += drop'(u A)  (and dA's partials) lora_dx_kernel, BASE_IN_DX: in place

The down-projection with dropout (shared_down too), u and dB, and dA are the fused path's own
kernels. The base
output is rounded to its dtype before the update is added (PEFT's order); the fused path rounds
once. Which of the two runs faster depends on the shape and the GPU: `backend="auto"` times both
on first use (fastpeft/triton_path/lora_race.py) and keeps the faster per shape.
"""

from .lora import keep_mask, mask_spec, run_backward, run_forward, run_up, shared_down

__all__ = ["backward", "forward", "forward_up", "keep_mask", "mask_spec", "shared_down"]


def forward(x, weight, bias, lora_a, lora_b, seed, scaling: float, p: float):
    """(y, t, keep), as the fused path's `forward`."""
    return run_forward(x, weight, bias, lora_a, lora_b, seed, scaling, p, hybrid=True)


def backward(dy, x, weight, lora_a, lora_b, t, keep, seed, scaling: float, p: float, need_dx):
    """(dx or None, dA, dB), as the fused path's `backward`."""
    return run_backward(
        dy, x, weight, lora_a, lora_b, t, keep, seed, scaling, p, need_dx, hybrid=True
    )


def forward_up(x, weight, bias, lora_b, t, scaling: float):
    """y = x Wᵀ + b + s · t Bᵀ for a t `shared_down` computed: cuBLAS, then the update in place."""
    return run_up(x, weight, bias, t, lora_b, scaling, hybrid=True)
