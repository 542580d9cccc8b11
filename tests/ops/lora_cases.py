"""Input factories for the LoRA op tests (non-identity init: B ≠ 0, bias ≠ 0)."""

import torch

from fastpeft import functional
from fastpeft.ops import lora as ops
from fastpeft.reference.lora import lora_linear as reference


def make_inputs(M, K, N, R, dtype, adapter_dtype, device, bias=True, x_grad=True):
    g = torch.Generator().manual_seed(M * 1000 + K * 10 + R)

    def rand(*shape, scale=1.0, dt=dtype):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dt)

    x = rand(M, K).requires_grad_(x_grad)
    weight = rand(N, K, scale=K**-0.5)
    b = rand(N) if bias else None
    lora_a = rand(R, K, scale=K**-0.5, dt=adapter_dtype).requires_grad_()
    lora_b = rand(N, R, scale=R**-0.5, dt=adapter_dtype).requires_grad_()
    dy = rand(M, N)
    return x, weight, b, lora_a, lora_b, dy


def run_reference(inputs, scaling, keep, p, dtype=None):
    """Reference y and grads (x, A, B), optionally with every tensor cast to `dtype` first."""
    x, weight, b, lora_a, lora_b, dy = inputs
    cast = (lambda t: t) if dtype is None else (lambda t: None if t is None else t.to(dtype))
    leaves = [cast(t.detach()).requires_grad_(t.requires_grad) for t in (x, lora_a, lora_b)]
    y = reference(leaves[0], cast(weight), cast(b), leaves[1], leaves[2], scaling, keep, p)
    y.backward(cast(dy))
    return y.detach(), *(t.grad for t in leaves)


def run_op(inputs, scaling, p, backend, seed):
    x, weight, b, lora_a, lora_b, dy = inputs
    y, _, _ = ops.lora_linear_fwd(x, weight, b, lora_a, lora_b, seed, scaling, p, backend)
    y.backward(dy)
    return y.detach(), x.grad, lora_a.grad, lora_b.grad


def keep_mask(backend, seed, shape, p):
    return functional.dropout_keep_mask(seed, shape, p, backend=backend) if p > 0 else None
