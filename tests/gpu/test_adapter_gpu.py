"""GPU tier: the real Triton adapter kernels in bf16 at realistic shapes (skipped without CUDA)."""

import pytest
import torch

from fastpeft import testing

from ..ops.adapter_cases import (
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

pytestmark = pytest.mark.gpu
W_DTYPES = [torch.bfloat16, torch.float32]


def _check(got, ref32, ref_same, names):
    for name, g, r32, rs in zip(names, got, ref32, ref_same, strict=True):
        if rs is None:
            continue
        assert g.dtype == rs.dtype, name
        if g.dtype == torch.float32:  # fp32 adapter grads: the reference computes them in fp32
            testing.assert_close_fp32(g, rs, rtol=1e-3, name=name)
        else:
            testing.assert_within_dtype_budget(g, r32, rs, name=name)


@pytest.mark.parametrize("w_dtype", W_DTYPES, ids=["bf16", "fp32"])
@pytest.mark.parametrize("shape", [(8192, 4096, 256), (1000, 11008, 512), (77, 4096, 64)])
@pytest.mark.parametrize("p", [0.0, 0.05])
@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_bf16_adapter_within_budget(w_dtype, shape, p, activation):
    inputs = make_inputs(*shape, torch.bfloat16, w_dtype, "cuda", residual=p > 0)
    seed = torch.tensor([3], device="cuda")
    got = run_op(inputs, 1.0, activation, p, "triton", seed)
    keep = keep_mask("triton", seed, shape[:2], p)
    with testing.tf32_disabled():
        ref32 = run_reference(inputs, 1.0, activation, keep, p, dtype=torch.float32)
        same = run_reference(inputs, 1.0, activation, keep, p)
    _check(got, ref32, same, NAMES)


@pytest.mark.parametrize("w_dtype", W_DTYPES, ids=["bf16", "fp32"])
@pytest.mark.parametrize("p", [0.0, 0.05])
def test_bf16_pair_within_budget(w_dtype, p):
    M, D, H = 8192, 4096, 256
    inputs = make_pair_inputs(M, D, H, torch.bfloat16, w_dtype, "cuda")
    seed = torch.tensor([3, 4], device="cuda")
    got = run_pair_op(inputs, 1.0, "tanh", p, "triton", seed)
    keeps = pair_keep_masks("triton", seed, (M, D), p)
    with testing.tf32_disabled():
        ref32 = run_pair_reference(inputs, 1.0, "tanh", keeps, p, dtype=torch.float32)
        same = run_pair_reference(inputs, 1.0, "tanh", keeps, p)
    _check(got, ref32, same, PAIR_NAMES)


def test_m_times_d_beyond_int32():
    # 2**31 + elements in z: offsets must be 64-bit in every kernel that touches [M, d].
    M, D, H = 524_800, 4096, 64
    inputs = make_inputs(M, D, H, torch.bfloat16, torch.bfloat16, "cuda")
    got = run_op(inputs, 1.0, "silu", 0.1, "triton", torch.tensor([9], device="cuda"))
    assert all(torch.isfinite(g).all() for g in got if g is not None)
    assert (got[0][-1].float() - inputs[0][-1].detach().float()).abs().sum() > 0, "last out rows"
    assert got[1][-1].abs().sum() > 0, "last rows of dz must be written"
