"""torch.library.opcheck and torch.compile(fullgraph=True) for the LoRA custom ops."""

import pytest
import torch

import fastpeft
from fastpeft.ops import lora as ops

from .lora_cases import make_inputs
from .op_checks import check_compiled_matches_eager

BACKENDS = ["triton", "torch"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_opcheck_forward(backend, p, device):
    x, weight, b, lora_a, lora_b, _ = make_inputs(
        37, 40, 36, 8, torch.float32, torch.float32, device
    )
    seed = torch.tensor([11], device=device) if p else None
    torch.library.opcheck(
        ops.lora_linear_fwd, (x, weight, b, lora_a, lora_b, seed, 1.5, p, backend)
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("need_dx", [True, False])
def test_opcheck_backward(backend, need_dx, device):
    x, weight, b, lora_a, lora_b, dy = make_inputs(
        37, 40, 36, 8, torch.float32, torch.float32, device
    )
    seed = torch.tensor([11], device=device)
    y, t, keep = ops.lora_linear_fwd(x, weight, b, lora_a, lora_b, seed, 1.5, 0.2, backend)
    args = (dy, x.detach(), weight, lora_a.detach(), lora_b.detach(), t, keep, seed)
    torch.library.opcheck(ops.lora_linear_bwd, (*args, 1.5, 0.2, backend, need_dx))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend, compiler, device):
    x, weight, b, lora_a, lora_b, dy = make_inputs(
        2 * 19, 40, 36, 8, torch.float32, torch.float32, device
    )
    x3 = x.detach().reshape(2, 19, 40)

    def step(x, lora_a, lora_b):
        y = fastpeft.lora_linear(x, weight, b, lora_a, lora_b, 1.5, backend=backend)
        return (y * y).sum()

    names = ("loss", "dx", "dA", "dB")
    launches = {f"lora_fwd:{backend}": 1, f"lora_bwd:{backend}": 1}
    check_compiled_matches_eager(step, (x3, lora_a, lora_b), compiler, names, launches)


def test_compile_fullgraph_with_dropout_runs(device):
    # Dropout draws its seed with torch.randint inside the graph: it must not break the graph.
    torch._dynamo.reset()
    x, weight, b, lora_a, lora_b, _ = make_inputs(
        24, 40, 36, 8, torch.float32, torch.float32, device
    )

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(x):
        return fastpeft.lora_linear(x, weight, b, lora_a, lora_b, 1.5, 0.1, backend="torch")

    y = step(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and lora_a.grad is not None
