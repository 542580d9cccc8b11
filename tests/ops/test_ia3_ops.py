"""Fused IA3 ops (Triton and PyTorch paths) against the literal PEFT reference; opcheck; compile;
the functional's argument checks."""

from functools import partial

import pytest
import torch

import fastpeft
from fastpeft.ops import _counters
from fastpeft.ops import ia3 as ops
from fastpeft.reference.ia3 import ia3_linear as reference
from fastpeft.testing import assert_close_fp32, assert_within_dtype_budget
from fastpeft.tolerance import assert_matches_reference
from fastpeft.torch_path import ia3 as torch_ia3

from .op_checks import check_compiled_matches_eager

BACKENDS = ["triton", "hybrid", "torch"]
CASES = [False, True]  # feedforward: output scaling (k/v_proj) or input scaling (down_proj)
CASE_IDS = ["out", "ff"]
# M, K, N not multiples of the blocks (32 under the interpreter); the middle one spans 2-3 blocks.
SHAPES = [(70, 45, 38), (33, 64, 96), (7, 40, 5)]
NAMES = ("y", "dx", "dl")


def make_inputs(M, K, N, dtype, l_dtype, device, feedforward, bias=True, x_grad=True):
    """x, W, b, l, dy with l random around 1 (PEFT initialises it to ones: every bug passes)."""
    g = torch.Generator().manual_seed(M * 1000 + K * 10 + N + feedforward)

    def rand(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=g) * scale + shift).to(device=device, dtype=dt)

    x = rand(M, K).requires_grad_(x_grad)
    weight = rand(N, K, scale=K**-0.5)
    b = rand(N) if bias else None
    ia3_l = rand(K if feedforward else N, scale=0.5, shift=1.0, dt=l_dtype).requires_grad_()
    dy = rand(M, N)
    return x, weight, b, ia3_l, dy


def run_reference(inputs, feedforward, dtype=None):
    """Reference y and grads (x, l), optionally with every tensor cast to `dtype` first."""
    x, weight, b, ia3_l, dy = inputs
    cast = (lambda t: t) if dtype is None else (lambda t: None if t is None else t.to(dtype))
    leaves = [cast(t.detach()).requires_grad_(t.requires_grad) for t in (x, ia3_l)]
    y = reference(leaves[0], cast(weight), cast(b), leaves[1], feedforward)
    y.backward(cast(dy))
    return y.detach(), leaves[0].grad, leaves[1].grad


def run_op(inputs, feedforward, backend, save_z=True):
    x, weight, b, ia3_l, dy = inputs
    y, _ = ops.ia3_linear_fwd(x, weight, b, ia3_l, feedforward, save_z, backend)
    y.backward(dy)
    return y.detach(), x.grad, ia3_l.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feedforward", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_fp32_matches_reference(backend, feedforward, shape, bias, device):
    inputs = make_inputs(*shape, torch.float32, torch.float32, device, feedforward, bias=bias)
    _counters.reset()
    got = run_op(inputs, feedforward, backend)
    assert _counters.launches[f"ia3_fwd:{backend}"] == 1
    assert _counters.launches[f"ia3_bwd:{backend}"] == 1
    assert_matches_reference(got, partial(run_reference, inputs, feedforward), NAMES, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feedforward", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("l_dtype", [torch.float32, torch.float16], ids=["fp32-l", "fp16-l"])
def test_fp16_base_within_dtype_budget(backend, feedforward, l_dtype, device):
    # An fp32 vector on a 16-bit base is PEFT's default regime (bf16 is tested on the GPU tier:
    # the interpreter cannot do bf16 arithmetic).
    inputs = make_inputs(70, 45, 38, torch.float16, l_dtype, device, feedforward)
    got = run_op(inputs, feedforward, backend)
    ref32 = run_reference(inputs, feedforward, dtype=torch.float32)
    peft = run_reference(inputs, feedforward)
    for name, g, r32, rp in zip(NAMES, got, ref32, peft, strict=True):
        assert g.dtype == rp.dtype, name
        assert_within_dtype_budget(g, r32, rp, name=f"{backend} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feedforward", CASES, ids=CASE_IDS)
def test_no_input_grad_skips_dx(backend, feedforward, device):
    inputs = make_inputs(
        40, 36, 34, torch.float32, torch.float32, device, feedforward, x_grad=False
    )
    got = run_op(inputs, feedforward, backend)
    assert got[1] is None
    assert_matches_reference(got, partial(run_reference, inputs, feedforward), NAMES, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feedforward", CASES, ids=CASE_IDS)
def test_frozen_vector_gives_dx_only(backend, feedforward, device):
    inputs = make_inputs(40, 36, 34, torch.float32, torch.float32, device, feedforward)
    inputs[3].requires_grad_(False)
    got = run_op(inputs, feedforward, backend, save_z=False)
    assert got[2] is None
    assert_matches_reference(got, partial(run_reference, inputs, feedforward), NAMES, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vector_gradient_needs_saved_z(backend, device):
    inputs = make_inputs(9, 8, 7, torch.float32, torch.float32, device, False)
    with pytest.raises(RuntimeError, match="save_z=False"):
        run_op(inputs, False, backend, save_z=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feedforward", CASES, ids=CASE_IDS)
def test_non_contiguous_input_and_grad(backend, feedforward, device):
    inputs = list(make_inputs(40, 36, 34, torch.float32, torch.float32, device, feedforward))
    inputs[0] = torch.randn(40, 72, device=device)[:, ::2].detach().requires_grad_()
    inputs[4] = torch.randn(34, 40, device=device).t()
    got = run_op(inputs, feedforward, backend)
    assert_matches_reference(got, partial(run_reference, inputs, feedforward), NAMES, backend)


@pytest.mark.parametrize("feedforward", CASES, ids=CASE_IDS)
def test_vector_gradient_is_deterministic(feedforward, device):
    grads = []
    for _ in range(2):
        inputs = make_inputs(70, 45, 38, torch.float32, torch.float32, device, feedforward)
        grads.append(run_op(inputs, feedforward, "triton")[2])
    assert torch.equal(grads[0], grads[1])


# --------------------------------------------------------------------------------------------
# opcheck and torch.compile
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feedforward", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("save_z", [True, False])
def test_opcheck_forward(backend, feedforward, save_z, device):
    x, weight, b, ia3_l, _ = make_inputs(
        37, 40, 36, torch.float32, torch.float32, device, feedforward
    )
    if not save_z and not feedforward:
        ia3_l = ia3_l.detach()  # without z there is no dl; opcheck's autograd test would ask
    torch.library.opcheck(ops.ia3_linear_fwd, (x, weight, b, ia3_l, feedforward, save_z, backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feedforward", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("need", [(True, True), (True, False), (False, True)], ids=str)
def test_opcheck_backward(backend, feedforward, need, device):
    x, weight, b, ia3_l, dy = make_inputs(
        37, 40, 36, torch.float32, torch.float32, device, feedforward
    )
    _, z = ops.ia3_linear_fwd(x, weight, b, ia3_l, feedforward, True, backend)
    saved = x.detach() if feedforward else z
    args = (dy, saved, weight, ia3_l.detach(), feedforward, *need, backend)
    torch.library.opcheck(ops.ia3_linear_bwd, args)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend, compiler, device):
    # One graph holding both cases: an output-scaled k/v-style layer feeding a down_proj-style one.
    x, w1, b1, l1, _ = make_inputs(2 * 19, 40, 36, torch.float32, torch.float32, device, False)
    _, w2, _, l2, _ = make_inputs(2 * 19, 36, 24, torch.float32, torch.float32, device, True)
    x3 = x.detach().reshape(2, 19, 40)

    def step(x, l1, l2):
        h = fastpeft.ia3_linear(x, w1, b1, l1, False, backend=backend)
        y = fastpeft.ia3_linear(h, w2, None, l2, True, backend=backend)
        return (y * y).sum()

    names = ("loss", "dx", "dl_out", "dl_ff")
    launches = {f"ia3_fwd:{backend}": 2, f"ia3_bwd:{backend}": 2}
    check_compiled_matches_eager(step, (x3, l1, l2), compiler, names, launches)


# --------------------------------------------------------------------------------------------
# fastpeft.ia3_linear
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feedforward", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("x_grad", [True, False], ids=["dx", "no-dx"])
def test_eager_calls_take_the_light_function_with_the_ops_numbers(backend, feedforward, x_grad):
    # Eager fastpeft.ia3_linear runs the implementation through EagerIA3Linear (not the custom
    # ops' dispatcher round trips): the same numbers and counters as the ops, bit for bit.
    inputs = make_inputs(70, 45, 38, torch.float32, torch.float32, "cpu", feedforward,
                         x_grad=x_grad)  # fmt: skip
    x, weight, b, ia3_l, dy = inputs
    _counters.reset()
    y = fastpeft.ia3_linear(x, weight, b, ia3_l, feedforward, backend=backend)
    assert type(y.grad_fn).__name__ == "EagerIA3LinearBackward"
    y.backward(dy)
    got = (y.detach(), x.grad, ia3_l.grad)
    assert _counters.launches[f"ia3_fwd:{backend}"] == 1
    assert _counters.launches[f"ia3_bwd:{backend}"] == 1
    x.grad, ia3_l.grad = None, None
    want = run_op(inputs, feedforward, backend)
    for g, w in zip(got, want, strict=True):
        assert (g is None and w is None) or torch.equal(g, w)


def _args(M=6, K=8, N=5, dtype=torch.float32, feedforward=False):
    return dict(
        x=torch.randn(M, K, dtype=dtype),
        weight=torch.randn(N, K, dtype=dtype),
        bias=torch.randn(N, dtype=dtype),
        ia3_l=torch.rand(K if feedforward else N) + 0.5,
        feedforward=feedforward,
    )


@pytest.mark.parametrize("feedforward", CASES, ids=CASE_IDS)
def test_functional_keeps_leading_dims(feedforward):
    args = _args(feedforward=feedforward)
    args["x"] = torch.randn(2, 3, 8)
    y = fastpeft.ia3_linear(**args, backend="torch")
    assert y.shape == (2, 3, 5)
    assert_close_fp32(y, reference(**args))


@pytest.mark.parametrize("feedforward", CASES, ids=CASE_IDS)
def test_functional_no_grad_stores_no_z(feedforward, monkeypatch):
    seen = []
    forward = torch_ia3.forward
    monkeypatch.setattr(torch_ia3, "forward", lambda *a: seen.append(a[-1]) or forward(*a))
    args = _args(feedforward=feedforward)
    args["ia3_l"].requires_grad_()
    with torch.no_grad():
        y = fastpeft.ia3_linear(**args, backend="torch")
    assert seen == [False]
    assert_close_fp32(y, reference(**args))


@pytest.mark.parametrize(
    "change, error, pattern",
    [
        ({"x": torch.randn(6, 7)}, ValueError, r"x must have shape \[..., K\] with K = .* 8"),
        ({"weight": torch.randn(5, 8, 1)}, ValueError, "weight must be 2-D"),
        ({"ia3_l": torch.randn(5, 1)}, ValueError, r"ia3_l must have shape \[N=5\] .*flatten\(\)"),
        ({"ia3_l": torch.randn(8)}, ValueError, r"ia3_l must have shape \[N=5\]"),
        ({"ia3_l": torch.randn(5), "feedforward": True}, ValueError, r"shape \[K=8\]"),
        ({"bias": torch.randn(4)}, ValueError, r"bias must have shape \[N=5\]"),
        ({"x": torch.randn(6, 8).half()}, TypeError, "x, weight and bias must share one dtype"),
        ({"ia3_l": torch.randn(5).half()}, TypeError, "ia3_l must be float32 or weight's dtype"),
        ({"x": torch.randint(0, 3, (6, 8))}, TypeError, "x must be float32, float16 or bfloat16"),
        ({"ia3_l": [1.0] * 5}, TypeError, "ia3_l must be a torch.Tensor"),
        ({"feedforward": 1}, TypeError, "feedforward must be a bool"),
        ({"weight": torch.randn(5, 8).requires_grad_()}, ValueError, "must be frozen"),
        ({"bias": torch.randn(5).requires_grad_()}, ValueError, "must be frozen"),
        ({"ia3_l": torch.randn(5, device="meta")}, ValueError, "all tensors must be on one"),
        ({"backend": "gpu"}, ValueError, "backend must be one of"),
    ],
)
def test_functional_bad_input_names_the_argument(change, error, pattern):
    args = {**_args(), **change}
    with pytest.raises(error, match=pattern):
        fastpeft.ia3_linear(**args)
