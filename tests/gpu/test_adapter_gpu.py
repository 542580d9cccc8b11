"""GPU tier: the real Triton adapter kernels in bf16 at realistic shapes (skipped without CUDA)."""

from functools import partial

import pytest
import torch

from fastpeft import testing

from ..ops import adapter_cases as cases
from ..ops.op_checks import check_within_budget

pytestmark = pytest.mark.gpu
W_DTYPES = [torch.bfloat16, torch.float32]


@pytest.mark.parametrize("w_dtype", W_DTYPES, ids=["bf16", "fp32"])
@pytest.mark.parametrize("shape", [(8192, 4096, 256), (1000, 11008, 512), (77, 4096, 64)])
@pytest.mark.parametrize("p", [0.0, 0.05])
@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_bf16_adapter_within_budget(w_dtype, shape, p, activation):
    inputs = cases.make_inputs(*shape, torch.bfloat16, w_dtype, "cuda", residual=p > 0)
    seed = torch.tensor([3], device="cuda")
    got = cases.run_op(inputs, 1.0, activation, p, "triton", seed)
    keep = cases.keep_mask("triton", seed, shape[:2], p)
    with testing.tf32_disabled():
        ref32 = cases.run_reference(inputs, 1.0, activation, keep, p, dtype=torch.float32)
        same = cases.run_reference(inputs, 1.0, activation, keep, p)
    check_within_budget(got, ref32, same, cases.NAMES, fp32_rtol=1e-3)


@pytest.mark.parametrize("w_dtype", W_DTYPES, ids=["bf16", "fp32"])
@pytest.mark.parametrize("p", [0.0, 0.05])
def test_bf16_pair_within_budget(w_dtype, p):
    M, D, H = 8192, 4096, 256
    inputs = cases.make_pair_inputs(M, D, H, torch.bfloat16, w_dtype, "cuda")
    seed = torch.tensor([3, 4], device="cuda")
    got = cases.run_pair_op(inputs, 1.0, "tanh", p, "triton", seed)
    keeps = cases.pair_keep_masks("triton", seed, (M, D), p)
    with testing.tf32_disabled():
        ref32 = cases.run_pair_reference(inputs, 1.0, "tanh", keeps, p, dtype=torch.float32)
        same = cases.run_pair_reference(inputs, 1.0, "tanh", keeps, p)
    check_within_budget(got, ref32, same, cases.PAIR_NAMES, fp32_rtol=1e-3)


@pytest.mark.parametrize("pair", [False, True], ids=["single", "pair"])
def test_wide_tile_preset_within_budget(pair):
    # FASTPEFT_ADAPTER_TILES=wide (dpre's H blocks and the weight gradients' tiles doubled, split
    # over M) on the real kernels, bf16 weights, the headline shape: the proof kit times it.
    from fastpeft.triton_path.adapter import tile_preset

    M, D, H = 8192, 4096, 256
    p = 0.05
    with tile_preset("wide"):
        if pair:
            inputs = cases.make_pair_inputs(M, D, H, torch.bfloat16, torch.bfloat16, "cuda")
            seed = torch.tensor([5, 6], device="cuda")
            got = cases.run_pair_op(inputs, 1.0, "tanh", p, "triton", seed)
            keeps = cases.pair_keep_masks("triton", seed, (M, D), p)
            run = partial(cases.run_pair_reference, inputs, 1.0, "tanh", keeps, p)
            names = cases.PAIR_NAMES
        else:
            inputs = cases.make_inputs(M, D, H, torch.bfloat16, torch.bfloat16, "cuda",
                                       residual=True)  # fmt: skip
            seed = torch.tensor([5], device="cuda")
            got = cases.run_op(inputs, 1.0, "tanh", p, "triton", seed)
            keep = cases.keep_mask("triton", seed, (M, D), p)
            run = partial(cases.run_reference, inputs, 1.0, "tanh", keep, p)
            names = cases.NAMES
    with testing.tf32_disabled():
        ref32, same = run(dtype=torch.float32), run()
    check_within_budget(got, ref32, same, names, fp32_rtol=1e-3)


def test_m_times_d_beyond_int32():
    # 2**31 + elements in z: offsets must be 64-bit in every kernel that touches [M, d].
    M, D, H = 524_800, 4096, 64
    inputs = cases.make_inputs(M, D, H, torch.bfloat16, torch.bfloat16, "cuda")
    got = cases.run_op(inputs, 1.0, "silu", 0.1, "triton", torch.tensor([9], device="cuda"))
    assert all(torch.isfinite(g).all() for g in got if g is not None)
    assert (got[0][-1].float() - inputs[0][-1].detach().float()).abs().sum() > 0, "last out rows"
    assert got[1][-1].abs().sum() > 0, "last rows of dz must be written"
