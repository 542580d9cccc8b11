"""fastpeft.lora_linear with `scaling` as a 0-d tensor, as PEFT's
`prepare_model_for_compiled_hotswap` stores it: exactly the float path in eager mode on the CPU;
folded into B (no `.item()`) under torch.compile and on a GPU, where a later `fill_` is seen
without a recompile or a host synchronisation."""

import pytest
import torch

import fastpeft
from fastpeft.testing import assert_close_fp32

from .lora_cases import make_inputs

BACKENDS = ["torch", "triton"]
NAMES = ("y", "dx", "dA", "dB")


def _inputs(device):
    return make_inputs(37, 40, 36, 8, torch.float32, torch.float32, device)


def _run(fn, inputs, scaling):
    x, weight, b, lora_a, lora_b, dy = inputs
    leaves = [t.detach().clone().requires_grad_() for t in (x, lora_a, lora_b)]
    y = fn(leaves[0], weight, b, leaves[1], leaves[2], scaling)
    y.backward(dy)
    return y.detach(), *(t.grad for t in leaves)


def _eager(backend):
    def fn(x, weight, b, lora_a, lora_b, scaling):
        return fastpeft.lora_linear(x, weight, b, lora_a, lora_b, scaling, backend=backend)

    return fn


@pytest.mark.parametrize("backend", BACKENDS)
def test_cpu_tensor_scaling_is_exactly_the_float_path(backend, device):
    inputs = _inputs(device)
    want = _run(_eager(backend), inputs, 1.5)
    got = _run(_eager(backend), inputs, torch.tensor(1.5))  # a CPU scalar, as PEFT makes it
    for name, g, w in zip(NAMES, got, want, strict=True):
        assert torch.equal(g, w), name


@pytest.mark.parametrize(
    "scaling, pattern",
    [
        (
            torch.tensor([1.5]),
            r"0-d floating-point tensor, got a torch.float32 tensor of shape \(1,\)",
        ),
        (torch.tensor(2), r"0-d floating-point tensor, got a torch.int64 tensor of shape \(\)"),
        (torch.tensor(float("inf")), "scaling must be a finite number, got inf"),
        ("2", "scaling must be a finite number, got '2'"),
    ],
    ids=["1-d", "int", "inf", "str"],
)
def test_bad_scalings_are_refused(scaling, pattern):
    x, weight, b, lora_a, lora_b, _ = _inputs("cpu")
    with pytest.raises(ValueError, match=pattern):
        fastpeft.lora_linear(x, weight, b, lora_a, lora_b, scaling, backend="torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_tensor_scaling_follows_fill_without_recompiling(backend, device):
    # fullgraph=True: an .item() would break the graph (an error here), and a value read at trace
    # time would be a guarded constant: the fill_ below would recompile (an error under the
    # stance) or, unguarded, give the old scaling's numbers.
    torch._dynamo.reset()
    inputs = _inputs(device)
    scaling = torch.tensor(1.5)
    compiled = torch.compile(_eager(backend), fullgraph=True, backend="aot_eager")
    for value in (1.5, 0.25):
        scaling.fill_(value)
        want = _run(_eager(backend), inputs, value)
        with torch.compiler.set_stance("fail_on_recompile" if value != 1.5 else "default"):
            got = _run(compiled, inputs, scaling)
        for name, g, w in zip(NAMES, got, want, strict=True):
            assert_close_fp32(g, w, rtol=1e-5, name=f"{name} (scaling {value})")


@pytest.mark.gpu
@pytest.mark.parametrize("adapter_dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_tensor_scaling_needs_no_host_sync(adapter_dtype):
    inputs = make_inputs(300, 256, 192, 16, torch.bfloat16, adapter_dtype, "cuda")
    scaling = torch.tensor(2.0, device="cuda")  # a power of two: folding it into B is exact
    fn = _eager("triton")
    want = _run(fn, inputs, 2.0)
    _run(fn, inputs, scaling)  # compile the kernels outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = _run(fn, inputs, scaling)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for name, g, w in zip(NAMES, got, want, strict=True):
        assert torch.equal(g, w), name
