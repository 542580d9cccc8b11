"""Property-based tests (hypothesis) of every public op over shapes, leading dims, dtypes, strides
and bad input: the right answer (against the literal PEFT / Paper A references, in the SPEC §7
dtype budget) or a clear exception naming the argument, never a crash or silent garbage; NaN and
Inf propagate where PyTorch's own layers put them."""

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastpeft
from fastpeft.functional import adapter
from fastpeft.reference import adapter as adapter_ref
from fastpeft.reference import ia3 as ia3_ref
from fastpeft.reference import lora as lora_ref
from fastpeft.testing import assert_close_fp32, assert_within_dtype_budget

BACKENDS = ["torch"]
if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
    BACKENDS.append("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# The Triton interpreter has no bf16/fp16 arithmetic: 16-bit dtypes only with the torch backend
# on a CPU (the GPU tier covers them on Triton).
LOW = [torch.bfloat16, torch.float16]
PROFILE = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@st.composite
def layouts(draw, max_dim=24):
    """(leading dims, K, N, rank, non-contiguous x?)."""
    lead = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=2)))
    if not lead:
        lead = (draw(st.integers(1, 9)),)
    K, N = draw(st.integers(1, max_dim)), draw(st.integers(1, max_dim))
    return lead, K, N, draw(st.integers(1, 8)), draw(st.booleans())


def _x(lead, K, dtype, strided, g):
    if strided:  # a transposed view: x's last dim has stride != 1
        base = torch.randn(K, *lead, generator=g).to(dtype)
        return base.movedim(0, -1).to(DEVICE).requires_grad_()
    return torch.randn(*lead, K, generator=g).to(dtype).to(DEVICE).requires_grad_()


def _leaf(shape, dtype, g, scale=1.0):
    return (scale * torch.randn(*shape, generator=g)).to(dtype).to(DEVICE).requires_grad_()


def _compare(fused_fn, ref_fn, leaves, dtype):
    """Output and every leaf gradient: fp32 within rounding, 16-bit within the SPEC budget."""
    out = fused_fn(*leaves)
    grads = torch.autograd.grad(out, leaves, torch.ones_like(out), allow_unused=True)
    wide = [t.detach().double().requires_grad_() for t in leaves]
    ref64 = ref_fn(*wide)
    ref64_grads = torch.autograd.grad(ref64, wide, torch.ones_like(ref64), allow_unused=True)
    same = [t.detach().clone().requires_grad_() for t in leaves]
    ref = ref_fn(*same)
    ref_grads = torch.autograd.grad(ref, same, torch.ones_like(ref), allow_unused=True)
    pairs = [("output", out, ref64, ref)] + [
        (f"grad {i}", a, b, c)
        for i, (a, b, c) in enumerate(zip(grads, ref64_grads, ref_grads, strict=True))
    ]
    for name, got, exact, torch_same in pairs:
        if got is None:
            assert exact is None or not exact.abs().sum(), f"{name}: missing gradient"
            continue
        assert got.shape == exact.shape and got.dtype == torch_same.dtype, name
        if dtype == torch.float32:  # a 16-bit run's fp32 grads carry 16-bit rounding: budget
            assert_close_fp32(got, exact.float(), rtol=1e-4, name=name)
        else:
            assert_within_dtype_budget(got, exact, torch_same, name=name)


def _dtypes(backend):
    return st.sampled_from([torch.float32] + (LOW if backend == "torch" else []))


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
@PROFILE
def test_lora_linear_matches_peft(backend, data):
    lead, K, N, r, strided = data.draw(layouts())
    dtype = data.draw(_dtypes(backend))
    adapter_dtype = data.draw(st.sampled_from([dtype, torch.float32]))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    x = _x(lead, K, dtype, strided, g)
    weight = (torch.randn(N, K, generator=g) * K**-0.5).to(dtype).to(DEVICE)
    bias = (torch.randn(N, generator=g)).to(dtype).to(DEVICE) if data.draw(st.booleans()) else None
    a, b = _leaf((r, K), adapter_dtype, g, K**-0.5), _leaf((N, r), adapter_dtype, g, r**-0.5)
    s = data.draw(st.sampled_from([0.5, 2.0]))
    _compare(
        lambda x, a, b: fastpeft.lora_linear(x, weight, bias, a, b, s, backend=backend),
        lambda x, a, b: lora_ref.lora_linear(x, weight.to(x.dtype), _cast(bias, x), a, b, s),
        [x, a, b],
        dtype,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
@PROFILE
def test_ia3_linear_matches_peft(backend, data):
    lead, K, N, _, strided = data.draw(layouts())
    dtype = data.draw(_dtypes(backend))
    feedforward = data.draw(st.booleans())
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    x = _x(lead, K, dtype, strided, g)
    weight = (torch.randn(N, K, generator=g) * K**-0.5).to(dtype).to(DEVICE)
    bias = torch.randn(N, generator=g).to(dtype).to(DEVICE) if data.draw(st.booleans()) else None
    vector = (1 + 0.3 * torch.randn(K if feedforward else N, generator=g)).to(DEVICE)
    vector.requires_grad_()
    _compare(
        lambda x, v: fastpeft.ia3_linear(x, weight, bias, v, feedforward, backend=backend),
        lambda x, v: ia3_ref.ia3_linear(x, weight.to(x.dtype), _cast(bias, x), v, feedforward),
        [x, vector],
        dtype,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
@PROFILE
def test_adapter_matches_reference(backend, data):
    lead, d, _, _, strided = data.draw(layouts())
    H = data.draw(st.integers(1, 16))
    dtype = data.draw(_dtypes(backend))
    w_dtype = data.draw(st.sampled_from([dtype, torch.float32]))
    activation = data.draw(st.sampled_from(["tanh", "relu", "gelu", "silu"]))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    z = _x(lead, d, dtype, strided, g)
    w_down, w_up = _leaf((H, d), w_dtype, g, d**-0.5), _leaf((d, H), w_dtype, g, H**-0.5)
    _compare(
        lambda z, wd, wu: adapter(z, wd, wu, 1.0, activation, backend=backend),
        lambda z, wd, wu: adapter_ref.adapter(z, wd, wu, 1.0, activation),
        [z, w_down, w_up],
        dtype,
    )


def _cast(bias, x):
    return None if bias is None else bias.to(x.dtype)


# Bad input: each mutation must raise TypeError/ValueError naming what is wrong.
BAD_LORA = {
    "x K mismatch": (lambda a: {**a, "x": torch.randn(3, 5)}, "x must have shape"),
    "weight 3-D": (lambda a: {**a, "weight": torch.randn(1, 6, 4)}, "weight must be 2-D"),
    "bias shape": (lambda a: {**a, "bias": torch.randn(5)}, "bias must have shape"),
    "x dtype": (lambda a: {**a, "x": a["x"].half()}, "share one dtype"),
    "float64": (lambda a: {**a, "x": a["x"].double()}, "x must be float32, float16 or bfloat16"),
    "lora_a shape": (lambda a: {**a, "lora_a": torch.randn(2, 5)}, "lora_a"),
    "lora_b shape": (lambda a: {**a, "lora_b": torch.randn(6, 3)}, "lora_b"),
    "dropout": (lambda a: {**a, "dropout_p": 1.0}, "dropout_p"),
    "x not a tensor": (lambda a: {**a, "x": [[1.0] * 4]}, "x"),
    "trainable weight": (
        lambda a: {**a, "weight": a["weight"].clone().requires_grad_()},
        "frozen",
    ),
}


@pytest.mark.parametrize("case", BAD_LORA)
def test_lora_bad_input_names_the_argument(case):
    good = dict(
        x=torch.randn(3, 4),
        weight=torch.randn(6, 4),
        bias=torch.randn(6),
        lora_a=torch.randn(2, 4),
        lora_b=torch.randn(6, 2),
        scaling=2.0,
        dropout_p=0.0,
    )
    mutate, pattern = BAD_LORA[case]
    with pytest.raises((TypeError, ValueError), match=pattern):
        fastpeft.lora_linear(**mutate(good))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["lora", "ia3-out", "ia3-in", "adapter"])
def test_nan_and_inf_propagate_like_pytorch(op, backend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, generator=g)
    x[1, 2], x[4, 0] = float("nan"), float("inf")
    x = x.to(DEVICE)
    w = (torch.randn(5, 8, generator=g) * 0.3).to(DEVICE)
    if op == "lora":
        a, b = torch.randn(2, 8, generator=g).to(DEVICE), torch.randn(5, 2, generator=g).to(DEVICE)
        got = fastpeft.lora_linear(x, w, None, a, b, 2.0, backend=backend)
        want = lora_ref.lora_linear(x, w, None, a, b, 2.0)
    elif op.startswith("ia3"):
        feedforward = op == "ia3-in"
        vector = torch.rand(8 if feedforward else 5, generator=g).add(0.5).to(DEVICE)
        got = fastpeft.ia3_linear(x, w, None, vector, feedforward, backend=backend)
        want = ia3_ref.ia3_linear(x, w, None, vector, feedforward)
    else:
        wd, wu = torch.randn(3, 8, generator=g).to(DEVICE), torch.randn(8, 3, generator=g)
        got = adapter(x, wd, wu.to(DEVICE), 1.0, "tanh", backend=backend)
        want = adapter_ref.adapter(x, wd, wu.to(DEVICE), 1.0, "tanh")
    assert torch.equal(got.isnan(), want.isnan()), "NaN positions differ from PyTorch's"
    assert torch.equal(got.isinf(), want.isinf()), "Inf positions differ from PyTorch's"
    assert got.isnan().any() or got.isinf().any(), "the bad rows must not be silently cleaned"
    finite = want.isfinite()
    assert_close_fp32(got[finite], want[finite], rtol=1e-4)
