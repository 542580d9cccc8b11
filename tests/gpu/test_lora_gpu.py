"""GPU tier: the real Triton kernels in bf16 at realistic shapes (skipped without CUDA)."""

from functools import partial

import pytest
import torch

from fastpeft import testing

from ..ops.lora_cases import keep_mask, make_inputs, run_op, run_reference
from ..ops.op_checks import check_within_budget
from .patched_llava import check_bf16_llava_patched_matches_peft

pytestmark = pytest.mark.gpu
NAMES = ("y", "dx", "dA", "dB")


@pytest.mark.parametrize("adapter_dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize(
    "shape", [(8192, 4096, 4096, 16), (1000, 4096, 11008, 128), (77, 4096, 1024, 8)]
)
@pytest.mark.parametrize("p", [0.0, 0.05])
def test_bf16_base_within_budget(adapter_dtype, shape, p):
    inputs = make_inputs(*shape, torch.bfloat16, adapter_dtype, "cuda")
    seed = torch.tensor([3], device="cuda")
    got = run_op(inputs, 2.0, p, "triton", seed)
    keep = keep_mask("triton", seed, shape[:2], p)
    with testing.tf32_disabled():
        ref32 = run_reference(inputs, 2.0, keep, p, dtype=torch.float32)
        same = run_reference(inputs, 2.0, keep, p)
    check_within_budget(got, ref32, same, NAMES, fp32_rtol=1e-3)


def test_m_times_k_beyond_int32():
    # 2**31 + elements in x: offsets must be 64-bit.
    M, K, N, R = 524_800, 4096, 64, 16
    inputs = make_inputs(M, K, N, R, torch.bfloat16, torch.bfloat16, "cuda")
    got = run_op(inputs, 1.0, 0.1, "triton", torch.tensor([9], device="cuda"))
    assert all(torch.isfinite(g).all() for g in got)
    assert got[1][-1].abs().sum() > 0, "last rows of dx must be written"


@pytest.mark.parametrize("autocast_adapter_dtype", [True, False])
@pytest.mark.parametrize("autocast", [False, True], ids=["eager", "under-autocast"])
def test_bf16_llava_patched_matches_peft(autocast_adapter_dtype, autocast):
    wrap = partial(testing.make_lora_model, autocast_adapter_dtype=autocast_adapter_dtype)
    check_bf16_llava_patched_matches_peft(wrap, ("lora_fwd:triton",), autocast=autocast)


def test_reduction_splits_read_the_compiles_occupancy():
    # waves.split sizes the rank-r reductions from the compiled kernels' registers and shared
    # memory (Triton's warmup compile, the driver's register count): on this GPU every probe is
    # answered, and no reduction launches under one wave of its resident CTAs.
    from fastpeft.triton_path import waves

    waves._resident_cache.clear()
    inputs = make_inputs(8192, 4096, 4096, 128, torch.bfloat16, torch.float32, "cuda")
    run_op(inputs, 2.0, 0.05, "triton", torch.tensor([5], device="cuda"))
    answers = dict(waves._resident_cache)
    names = {kernel.__name__ for kernel, _, _ in answers}
    assert {"lora_down_kernel", "lora_dy_b_kernel", "lora_da_kernel"} <= names, names
    assert all(isinstance(n, int) and 1 <= n <= 32 for n in answers.values()), answers
