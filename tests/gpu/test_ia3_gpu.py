"""GPU tier: the real Triton IA3 kernels in bf16 at realistic shapes (skipped without CUDA)."""

from functools import partial

import pytest
import torch

import fastpeft
from fastpeft import testing
from fastpeft.ops import ia3 as ops

from ..ops.test_ia3_ops import NAMES, make_inputs, run_op, run_reference
from ..patching.test_ia3_patch import make_ia3_model
from .patched_llava import check_bf16_llava_patched_matches_peft

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("l_dtype", [torch.bfloat16, torch.float32], ids=["bf16-l", "fp32-l"])
@pytest.mark.parametrize(
    "feedforward, shape",
    [
        (False, (8192, 4096, 4096)),  # k_proj / v_proj style: output scaling
        (True, (8192, 11008, 4096)),  # down_proj: input scaling
        (False, (77, 4096, 1024)),  # GQA k_proj, ragged M
        (True, (1000, 4096, 11008)),
    ],
    ids=["out-4096x4096", "ff-11008to4096", "out-4096to1024", "ff-4096to11008"],
)
def test_bf16_base_within_budget(feedforward, shape, l_dtype):
    inputs = make_inputs(*shape, torch.bfloat16, l_dtype, "cuda", feedforward)
    got = run_op(inputs, feedforward, "triton")
    with testing.tf32_disabled():
        ref32 = run_reference(inputs, feedforward, dtype=torch.float32)
        peft = run_reference(inputs, feedforward)
    for name, g, r32, rp in zip(NAMES, got, ref32, peft, strict=True):
        assert g.dtype == rp.dtype, name
        # An fp32 dl is judged against PEFT's own error too: its inputs (z, or g = dy W) are
        # bf16 in PEFT as well.
        testing.assert_within_dtype_budget(g, r32, rp, name=name)


@pytest.mark.parametrize("feedforward", [False, True], ids=["out", "ff"])
def test_vector_gradient_is_deterministic(feedforward):
    inputs = make_inputs(4096, 1024, 2048, torch.bfloat16, torch.float32, "cuda", feedforward)
    x, weight, b, ia3_l, dy = inputs
    _, saved = ops.ia3_linear_fwd(x, weight, b, ia3_l, feedforward, True, "triton")
    saved = x.detach() if feedforward else saved
    first = ops.ia3_linear_bwd(dy, saved, weight, ia3_l.detach(), feedforward, True, True, "triton")
    again = ops.ia3_linear_bwd(dy, saved, weight, ia3_l.detach(), feedforward, True, True, "triton")
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


@pytest.mark.parametrize("feedforward", [False, True], ids=["out", "ff"])
def test_m_times_k_beyond_int32(feedforward):
    # 2**31 + elements in x (and dx): row offsets must be 64-bit.
    M, K, N = 524_800, 4096, 64
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16).requires_grad_()
    weight = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * K**-0.5
    ia3_l = (torch.rand(K if feedforward else N, device="cuda") + 0.5).requires_grad_()
    y = fastpeft.ia3_linear(x, weight, None, ia3_l, feedforward, backend="triton")
    y.backward(torch.ones_like(y))
    assert torch.isfinite(y).all() and y[-1].abs().sum() > 0, "last rows of y must be written"
    assert torch.isfinite(x.grad).all() and x.grad[-1].abs().sum() > 0, "last rows of dx"
    assert torch.isfinite(ia3_l.grad).all()


@pytest.mark.parametrize("autocast_adapter_dtype", [True, False], ids=["fp32-l", "bf16-l"])
def test_bf16_llava_patched_matches_peft(autocast_adapter_dtype):
    wrap = partial(make_ia3_model, autocast_adapter_dtype=autocast_adapter_dtype)
    launches = ("ia3_fwd:triton", "ia3_bwd:triton")
    report = check_bf16_llava_patched_matches_peft(wrap, launches)
    assert len(report.patched) == 6
