"""Fused adapter ops (Triton and PyTorch paths) against the literal reference; opcheck; compile."""

from functools import partial

import pytest
import torch

from fastpeft import functional
from fastpeft.ops import _counters
from fastpeft.ops import adapter as ops
from fastpeft.reference import adapter as reference
from fastpeft.tolerance import assert_matches_reference

from .adapter_cases import (
    NAMES,
    PAIR_NAMES,
    keep_mask,
    make_inputs,
    make_pair_inputs,
    pair_keep_masks,
    run_op,
    run_pair_op,
    run_pair_reference,
    run_reference,
)
from .op_checks import check_compiled_matches_eager, check_within_budget

BACKENDS = ["triton", "torch"]
ACTIVATIONS = list(reference.ACTIVATIONS)
# (M, d, H): none a multiple of the 32-wide interpreter blocks in every dimension; H up to 48
# spans two H blocks.
SHAPES = {"tanh": (50, 40, 16), "relu": (50, 70, 48), "gelu": (33, 64, 32), "silu": (47, 45, 24)}
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("p", [0.0, 0.25])
@pytest.mark.parametrize("residual", [False, True], ids=["res_z", "res_sep"])
def test_fp32_matches_reference(backend, activation, p, residual, device):
    shape = SHAPES[activation]
    inputs = make_inputs(*shape, torch.float32, torch.float32, device, residual=residual)
    seed = torch.tensor([97 + shape[0]], device=device)
    _counters.reset()
    got = run_op(inputs, 1.75, activation, p, backend, seed)
    assert _counters.launches[f"adapter_fwd:{backend}"] == 1
    assert _counters.launches[f"adapter_bwd:{backend}"] == 1
    keep = keep_mask(backend, seed, shape[:2], p)
    assert_matches_reference(
        got, partial(run_reference, inputs, 1.75, activation, keep, p), NAMES, backend
    )


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_kernel_activation_formulas_to_the_ulp(activation, device):
    # The kernels' own act and act' (the interpreter runs no library tanh, so it is hand-written)
    # against float64 torch: act within 3 ulp + |x| ulp + twice torch's own fp32 error; act'
    # (|act'| <= 1.13) within 4 ulp of 1 plus twice torch's error. GEMM-level tests cannot see a
    # few-ulp slip in a coefficient.
    from fastpeft.triton_path import adapter as adapter_triton

    mags = torch.logspace(-20, 1, 2000)
    x = torch.cat([torch.linspace(-12, 12, 24001), mags, -mags]).to(device)
    y, dydx = adapter_triton.activation_and_grad(x, activation)
    fn = reference.ACTIVATIONS[activation]
    x64, x32 = x.double().requires_grad_(), x.clone().requires_grad_()
    want, theirs = fn(x64), fn(x32)
    want_grad, theirs_grad = (
        torch.autograd.grad(t.sum(), v)[0] for t, v in ((want, x64), (theirs, x32))
    )
    eps = torch.finfo(torch.float32).eps
    x64 = x64.detach()
    checks = (
        ("act", y, want, theirs, 3 * eps * want.abs() + eps * x64.abs()),
        ("act'", dydx, want_grad, theirs_grad, torch.full_like(x64, 4 * eps)),
    )
    for name, got, ref, torch32, own in checks:
        ref = ref.detach()
        err = (got.double() - ref).abs()
        allowed = own.detach() + 2 * (torch32.detach().double() - ref).abs()
        bad = err > allowed
        worst = float(x[(err - allowed).argmax()])
        assert not bad.any(), f"{activation} {name}: {int(bad.sum())} points off, worst x={worst}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("w_dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_fp16_within_dtype_budget(backend, activation, w_dtype, p, device):
    # fp16 activations with fp16 or fp32 (PEFT-style default) adapters; bf16 is the GPU tier's
    # (the interpreter cannot do bf16 arithmetic). Dropout runs with a separate residual.
    shape = SHAPES[activation]
    inputs = make_inputs(*shape, torch.float16, w_dtype, device, residual=p > 0)
    seed = torch.tensor([5], device=device)
    got = run_op(inputs, 2.0, activation, p, backend, seed)
    keep = keep_mask(backend, seed, shape[:2], p)
    ref32 = run_reference(inputs, 2.0, activation, keep, p, dtype=torch.float32)
    ref_same = run_reference(inputs, 2.0, activation, keep, p)
    check_within_budget(got, ref32, ref_same, NAMES, fp32_rtol=1e-4, label=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_pair_fp32_matches_reference(backend, activation, p, device):
    M, D, H = SHAPES[activation]
    inputs = make_pair_inputs(M, D, H, torch.float32, torch.float32, device)
    seed = torch.tensor([11, 4242], device=device)
    _counters.reset()
    got = run_pair_op(inputs, 0.8, activation, p, backend, seed)
    assert _counters.launches[f"adapter_pair_fwd:{backend}"] == 1
    assert _counters.launches[f"adapter_pair_bwd:{backend}"] == 1
    keeps = pair_keep_masks(backend, seed, (M, D), p)
    reference_at = partial(run_pair_reference, inputs, 0.8, activation, keeps, p)
    assert_matches_reference(got, reference_at, PAIR_NAMES, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("w_dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_pair_fp16_within_dtype_budget(backend, w_dtype, p, device):
    inputs = make_pair_inputs(45, 50, 40, torch.float16, w_dtype, device)
    seed = torch.tensor([3, 8], device=device)
    got = run_pair_op(inputs, 1.5, "gelu", p, backend, seed)
    keeps = pair_keep_masks(backend, seed, (45, 50), p)
    ref32 = run_pair_reference(inputs, 1.5, "gelu", keeps, p, dtype=torch.float32)
    ref_same = run_pair_reference(inputs, 1.5, "gelu", keeps, p)
    check_within_budget(got, ref32, ref_same, PAIR_NAMES, fp32_rtol=1e-4, label=backend)


@pytest.mark.parametrize("p", [0.0, 0.2])
@pytest.mark.parametrize("pair", [False, True], ids=["single", "pair"])
def test_wide_tiles_within_dtype_budget(pair, p, device):
    # The "wide" preset (FASTPEFT_ADAPTER_TILES) doubles dpre's H blocks and the weight
    # gradients' tiles for 16-bit weights: at H = 48 one 64-high block instead of two of 32
    # (tests/ops/test_adapter_plan.py checks the tiles it launches).
    from fastpeft.triton_path import adapter as adapter_triton

    M, D, H = SHAPES["relu"]
    seed = torch.tensor([7, 9], device=device)
    with adapter_triton.tile_preset("wide"):
        if pair:
            inputs = make_pair_inputs(M, D, H, torch.float16, torch.float16, device)
            got = run_pair_op(inputs, 1.5, "relu", p, "triton", seed)
            keeps = pair_keep_masks("triton", seed, (M, D), p)
            run, names = partial(run_pair_reference, inputs, 1.5, "relu", keeps, p), PAIR_NAMES
        else:
            inputs = make_inputs(M, D, H, torch.float16, torch.float16, device, residual=p > 0)
            got = run_op(inputs, 1.5, "relu", p, "triton", seed[:1])
            keep = keep_mask("triton", seed[:1], (M, D), p)
            run, names = partial(run_reference, inputs, 1.5, "relu", keep, p), NAMES
    check_within_budget(got, run(dtype=torch.float32), run(), names, fp32_rtol=1e-4,
                        label="triton wide")  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("residual", [False, True], ids=["res_z", "res_sep"])
def test_input_without_grad(backend, residual, device):
    inputs = make_inputs(40, 36, 20, torch.float32, torch.float32, device, residual, z_grad=False)
    got = run_op(inputs, 0.5, "silu", 0.0, backend, None)
    assert got[1] is None
    assert_matches_reference(
        got, partial(run_reference, inputs, 0.5, "silu", None, 0.0), NAMES, backend
    )
    pair = make_pair_inputs(40, 36, 20, torch.float32, torch.float32, device, x_grad=False)
    got = run_pair_op(pair, 0.5, "relu", 0.0, backend, None)
    assert got[2] is None
    reference_at = partial(run_pair_reference, pair, 0.5, "relu", (None, None), 0.0)
    assert_matches_reference(got, reference_at, PAIR_NAMES, backend)


def _cast_leaf(t, dtype):
    """A fresh leaf holding `t`'s values, in `dtype` when given."""
    return t.detach().to(dtype or t.dtype).clone().requires_grad_()


def _replayed_seed(count, device):
    # The wrappers draw their seed with torch.randint from the global generator: redraw it.
    return torch.randint(0, 2**31 - 1, (count,), device=device, dtype=torch.int64)


def _clear_grads(tensors) -> None:
    for t in tensors:
        if t is not None:
            t.grad = None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.0, 0.25])
@pytest.mark.parametrize("residual", [False, True], ids=["res_z", "res_sep"])
def test_eager_calls_take_the_light_function_with_the_ops_numbers(backend, p, residual, device):
    # Eager functional.adapter runs the implementation through EagerAdapter (not the custom ops'
    # dispatcher round trips): the same numbers and counters as the ops, bit for bit.
    inputs = make_inputs(50, 70, 48, torch.float32, torch.float32, device, residual=residual)
    z, w_down, w_up, res, dy = inputs
    torch.manual_seed(3)
    _counters.reset()
    out = functional.adapter(z, w_down, w_up, 1.75, "relu", p, res, backend=backend)
    assert type(out.grad_fn).__name__ == "EagerAdapterBackward"
    out.backward(dy)
    got = (out.detach(), z.grad, w_down.grad, w_up.grad, None if res is None else res.grad)
    assert _counters.launches[f"adapter_fwd:{backend}"] == 1
    assert _counters.launches[f"adapter_bwd:{backend}"] == 1
    _clear_grads((z, w_down, w_up, res))
    torch.manual_seed(3)
    want = run_op(inputs, 1.75, "relu", p, backend, _replayed_seed(1, device) if p else None)
    for g, w in zip(got, want, strict=True):
        assert (g is None and w is None) or torch.equal(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_eager_pair_calls_take_the_light_function_with_the_ops_numbers(backend, p, device):
    inputs = make_pair_inputs(47, 45, 24, torch.float32, torch.float32, device)
    leaves, du, dv = inputs[:5], inputs[5], inputs[6]
    torch.manual_seed(4)
    _counters.reset()
    u, v = functional.adapter_pair(*leaves, 0.8, "silu", p, backend=backend)
    assert type(u.grad_fn).__name__ == "EagerAdapterPairBackward"
    torch.autograd.backward([u, v], [du, dv])
    got = (u.detach(), v.detach(), *(t.grad for t in leaves))
    assert _counters.launches[f"adapter_pair_fwd:{backend}"] == 1
    assert _counters.launches[f"adapter_pair_bwd:{backend}"] == 1
    _clear_grads(leaves)
    torch.manual_seed(4)
    want = run_pair_op(inputs, 0.8, "silu", p, backend, _replayed_seed(2, device) if p else None)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrappers_keep_leading_dims_strides_and_dropout(backend, device):
    z, w_down, w_up, res, dy = make_inputs(2 * 23, 35, 20, torch.float32, torch.float32, device)
    wide = torch.randn(2, 23, 70, device=device)
    z3 = wide[..., ::2].detach().requires_grad_()  # non-contiguous, 3-D
    dy3 = dy.reshape(2, 23, 35)
    torch.manual_seed(123)
    out = functional.adapter(z3, w_down, w_up, 1.25, "tanh", 0.3, backend=backend)
    out.backward(dy3)
    torch.manual_seed(123)
    keep = keep_mask(backend, _replayed_seed(1, device), (46, 35), 0.3).reshape(2, 23, 35)

    def single_reference(dtype):
        leaves = [_cast_leaf(t, dtype) for t in (z3, w_down, w_up)]
        want = reference.adapter(*leaves, 1.25, "tanh", keep=keep, dropout_p=0.3)
        want.backward(dy3.to(want.dtype))
        return want.detach(), *(t.grad for t in leaves)

    assert out.shape == z3.shape
    got = (out.detach(), z3.grad, w_down.grad, w_up.grad)
    assert_matches_reference(got, single_reference, NAMES[:4], backend)

    x, *weights, du, dv = make_pair_inputs(2 * 23, 35, 20, torch.float32, torch.float32, device)
    x3 = x.detach().reshape(2, 23, 35).requires_grad_()
    torch.manual_seed(7)
    u, v = functional.adapter_pair(x3, *weights, 0.5, "gelu", 0.2, backend=backend)
    torch.autograd.backward([u, v], [du.reshape(u.shape), dv.reshape(v.shape)])
    torch.manual_seed(7)
    keeps = pair_keep_masks(backend, _replayed_seed(2, device), (46, 35), 0.2)
    keeps = tuple(k.reshape(x3.shape) for k in keeps)

    def pair_reference(dtype):
        leaves = [_cast_leaf(t, dtype) for t in (x3, *weights)]
        wu, wv = reference.adapter_pair(*leaves, 0.5, "gelu", *keeps, 0.2)
        grads = [du.reshape(u.shape).to(wu.dtype), dv.reshape(v.shape).to(wv.dtype)]
        torch.autograd.backward([wu, wv], grads)
        return wu.detach(), wv.detach(), *(t.grad for t in leaves)

    got = (u.detach(), v.detach(), x3.grad, *(w.grad for w in weights))
    assert_matches_reference(got, pair_reference, PAIR_NAMES, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_gradients_use_forward_masks(backend, device):
    # With p = 0.5 the grads must agree with the forward's own masks; a backward that drew fresh
    # ones, or a pair that swapped or shared its two masks, would fail here.
    M, D, H = 40, 36, 16
    inputs = make_pair_inputs(M, D, H, torch.float32, torch.float32, device)
    seed = torch.tensor([31337, 31338], device=device)
    got = run_pair_op(inputs, 1.0, "tanh", 0.5, backend, seed)
    k1, k2 = pair_keep_masks(backend, seed, (M, D), 0.5)
    reference_at = partial(run_pair_reference, inputs, 1.0, "tanh", (k1, k2), 0.5)
    assert_matches_reference(got, reference_at, PAIR_NAMES, backend)
    swapped = run_pair_reference(inputs, 1.0, "tanh", (k2, k1), 0.5)
    assert not torch.allclose(got[3], swapped[3], rtol=1e-3, atol=1e-3)


def test_torch_path_with_stored_masks(monkeypatch):
    # Off the CPU (or without fastpeft._C) the PyTorch path stores 1-byte keep-masks instead of
    # regenerating them: force that branch and replay the masks the forward op returns.
    from fastpeft.torch_path import dropout

    monkeypatch.setattr(dropout, "counter_based", lambda device: False)
    inputs = make_inputs(30, 36, 20, torch.float32, torch.float32, "cpu", residual=True)
    args = (*inputs[:4], torch.tensor([5]), 1.5, 0.4, "gelu", "torch")
    torch.library.opcheck(ops.adapter_fwd, args)
    out, _, keep = ops.adapter_fwd(*args)
    assert keep.shape == (1, 30, 36) and keep.dtype == torch.bool
    out.backward(inputs[4])
    got = (out.detach(), *(t.grad for t in inputs[:4]))
    assert_matches_reference(
        got, partial(run_reference, inputs, 1.5, "gelu", keep[0], 0.4), NAMES, "stored"
    )

    pair = make_pair_inputs(30, 36, 20, torch.float32, torch.float32, "cpu")
    u, v, _, keep = ops.adapter_pair_fwd(*pair[:5], torch.tensor([5, 6]), 1.5, 0.4, "tanh", "torch")
    assert keep.shape == (2, 30, 36) and not torch.equal(keep[0], keep[1])
    torch.autograd.backward([u, v], list(pair[5:]))
    got = (u.detach(), v.detach(), *(t.grad for t in pair[:5]))
    reference_at = partial(run_pair_reference, pair, 1.5, "tanh", (keep[0], keep[1]), 0.4)
    assert_matches_reference(got, reference_at, PAIR_NAMES, "stored")


def test_triton_backward_is_deterministic(device):
    runs = []
    for _ in range(2):
        inputs = make_inputs(50, 40, 48, torch.float32, torch.float32, device, residual=True)
        runs.append(run_op(inputs, 1.0, "gelu", 0.1, "triton", torch.tensor([1], device=device)))
    for name, a, b in zip(NAMES, *runs, strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_input(backend, device):
    z, w_down, w_up, _, _ = make_inputs(0, 24, 16, torch.float32, torch.float32, device)
    out = functional.adapter(z, w_down, w_up, backend=backend)
    out.sum().backward()
    assert out.shape == (0, 24) and torch.equal(w_down.grad, torch.zeros_like(w_down))


# ------------------------------------------------------------------------------------------------
# opcheck and torch.compile
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_opcheck_single(backend, p, device):
    z, w_down, w_up, res, dy = make_inputs(37, 40, 24, torch.float32, torch.float32, device, p > 0)
    seed = torch.tensor([11], device=device) if p else None
    args = (z, w_down, w_up, res, seed, 1.5, p, "tanh", backend)
    torch.library.opcheck(ops.adapter_fwd, args)
    _, pre, keep = ops.adapter_fwd(*args)
    for need_dz in (True, False):
        bwd_args = (dy, z.detach(), w_down.detach(), w_up.detach(), pre, keep, seed)
        torch.library.opcheck(
            ops.adapter_bwd, (*bwd_args, 1.5, p, "tanh", backend, res is None, need_dz)
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_opcheck_pair(backend, p, device):
    x, *weights, du, dv = make_pair_inputs(37, 40, 24, torch.float32, torch.float32, device)
    seed = torch.tensor([11, 12], device=device) if p else None
    args = (x, *weights, seed, 1.5, p, "silu", backend)
    torch.library.opcheck(ops.adapter_pair_fwd, args)
    _, _, pre, keep = ops.adapter_pair_fwd(*args)
    detached = [t.detach() for t in (x, *weights)]
    bwd_args = (du, dv, *detached, pre, keep, seed, 1.5, p, "silu", backend, True)
    torch.library.opcheck(ops.adapter_pair_bwd, bwd_args)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend, compiler, device):
    z, w_down, w_up, res, _ = make_inputs(
        2 * 19, 40, 24, torch.float32, torch.float32, device, True
    )
    x, *weights, _, _ = make_pair_inputs(2 * 19, 40, 24, torch.float32, torch.float32, device)
    z3, res3, x3 = (t.detach().reshape(2, 19, 40) for t in (z, res, x))

    def step(z, res, w_down, w_up, x, w_down_1, w_up_1, w_down_2, w_up_2):
        a = functional.adapter(z, w_down, w_up, 1.5, "gelu", residual=res, backend=backend)
        b = functional.adapter(a, w_down, w_up, 0.5, "tanh", backend=backend)  # a post-adapter
        u, v = functional.adapter_pair(
            x, w_down_1, w_up_1, w_down_2, w_up_2, 2.0, "silu", backend=backend
        )
        return (b * b).sum() + (u * v).sum()

    inputs = (z3, res3, w_down, w_up, x3, *weights)
    names = [f"output {i}" for i in range(1 + len(inputs))]  # the loss, then each leaf's grad
    launches = {f"adapter_fwd:{backend}": 2, f"adapter_pair_bwd:{backend}": 1}
    check_compiled_matches_eager(step, inputs, compiler, names, launches)


def test_compile_fullgraph_with_dropout_runs(device):
    # The seeds are drawn with torch.randint inside the graph: that must not break it.
    torch._dynamo.reset()
    x, *weights, _, _ = make_pair_inputs(24, 40, 16, torch.float32, torch.float32, device)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(x):
        u, v = functional.adapter_pair(x, *weights, 1.0, "tanh", 0.1, backend="torch")
        return functional.adapter(u + v, weights[0], weights[1], 1.0, "relu", 0.1, backend="torch")

    y = step(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and all(w.grad is not None for w in weights)


# ------------------------------------------------------------------------------------------------
# Argument checks
# ------------------------------------------------------------------------------------------------

_BAD_SINGLE = [
    ("z", lambda a: a.update(z=[1.0]), TypeError),
    ("z", lambda a: a.update(z=a["z"].long()), TypeError),
    ("w_down", lambda a: a.update(w_down=a["w_down"][:, :-1]), ValueError),
    ("w_down", lambda a: a.update(w_down=a["w_down"][:0]), ValueError),
    ("w_up", lambda a: a.update(w_up=a["w_up"].t()), ValueError),
    ("w_up", lambda a: a.update(w_up=a["w_up"].half()), TypeError),
    ("residual", lambda a: a.update(residual=a["z"][:-1]), ValueError),
    ("residual", lambda a: a.update(residual=3), TypeError),
    ("activation", lambda a: a.update(activation="swish"), ValueError),
    ("activation", lambda a: a.update(activation=None), TypeError),
    ("scaling", lambda a: a.update(scaling=float("inf")), ValueError),
    ("scaling", lambda a: a.update(scaling="1"), TypeError),
    ("dropout_p", lambda a: a.update(dropout_p=1.0), ValueError),
    ("dropout_p", lambda a: a.update(dropout_p=-0.1), ValueError),
    ("device", lambda a: a.update(w_up=a["w_up"].to("meta")), ValueError),
    ("backend", lambda a: a.update(backend="cuda"), ValueError),
]


@pytest.mark.parametrize("name,mutate,error", _BAD_SINGLE, ids=[c[0] for c in _BAD_SINGLE])
def test_bad_arguments_raise(name, mutate, error):
    z, w_down, w_up, _, _ = make_inputs(6, 8, 4, torch.float32, torch.float32, "cpu")
    args = dict(z=z, w_down=w_down, w_up=w_up, scaling=1.0, activation="tanh", dropout_p=0.0)
    mutate(args)
    with pytest.raises(error, match=name):
        functional.adapter(**args)


def test_pair_bad_arguments_raise():
    x, wd1, wu1, wd2, wu2, _, _ = make_pair_inputs(6, 8, 4, torch.float32, torch.float32, "cpu")
    with pytest.raises(ValueError, match="w_down_2"):
        functional.adapter_pair(x, wd1, wu1, wd2[:2], wu2[:, :2])
    with pytest.raises(TypeError, match="w_down_2"):
        functional.adapter_pair(x, wd1, wu1, wd2.half(), wu2.half())
    with pytest.raises(ValueError, match="w_up_1"):
        functional.adapter_pair(x, wd1, wu1[:-1], wd2, wu2)
    with pytest.raises(ValueError, match="x"):
        functional.adapter_pair(x[:, :0], wd1, wu1, wd2, wu2)


def test_auto_backend_is_torch_on_cpu(monkeypatch):
    monkeypatch.delenv("FASTPEFT_BACKEND", raising=False)
    z, w_down, w_up, _, _ = make_inputs(6, 8, 4, torch.float32, torch.float32, "cpu")
    _counters.reset()
    functional.adapter(z, w_down, w_up)
    assert _counters.launches["adapter_fwd:torch"] == 1
