"""fp32 products on tensor cores as 3xTF32 (launch.dot_flags) stay within fp32's own error.

Without allow_tf32, every fp32 `tl.dot` of the kernels runs as "tf32x3": each operand split into
a TF32 high part and a TF32 remainder, three products summed in fp32. On the CPU the split is
emulated bit for bit (TF32 keeps 10 mantissa bits, rounded to nearest) and measured against an
fp64 reference beside torch's own fp32 matmul (PEFT's fp32 adapters); on a GPU the LoRA kernels
themselves are (gpu tier).
"""

import pytest
import torch

from fastpeft import functional
from fastpeft.triton_path import launch


def _tf32(x: torch.Tensor) -> torch.Tensor:
    """x rounded to TF32 (10 mantissa bits, to nearest), as cvt.rna.tf32.f32 does."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def _three_tf32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a_hi, b_hi = _tf32(a), _tf32(b)
    a_lo, b_lo = _tf32(a - a_hi), _tf32(b - b_hi)
    # Each TF32 x TF32 product is exact in fp32; the sums are fp32, as on the tensor cores.
    return a_hi @ b_lo + a_lo @ b_hi + a_hi @ b_hi


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("K", [64, 4096])
def test_three_tf32_products_err_like_fp32_and_far_less_than_tf32(K):
    g = torch.Generator().manual_seed(K)
    a, b = torch.randn(256, K, generator=g), torch.randn(K, 64, generator=g)
    exact = a.double() @ b.double()
    split = _error(_three_tf32(a, b), exact)
    fp32 = _error(a @ b, exact)  # torch's fp32 matmul: PEFT's fp32 adapters
    tf32 = _error(_tf32(a) @ _tf32(b), exact)
    assert split <= 2 * fp32 + 1e-7, (split, fp32)
    assert split * 100 < tf32, (split, tf32)
    assert split < 1e-5  # the fp32 tolerance of the tests (SPEC: rtol 1e-5)


def test_the_dot_precision_follows_torchs_tf32_switch():
    hopper = launch.Target("cuda", 90)
    with launch.allow_tf32(False):
        assert launch.dot_flags(hopper)["PRECISION"] == "tf32x3"
    with launch.allow_tf32(True):
        assert launch.dot_flags(hopper)["PRECISION"] == "tf32"
    assert launch.dot_flags(launch.INTERPRETER) == {"UPCAST": True, "PRECISION": "ieee"}


@pytest.mark.gpu
@pytest.mark.parametrize("tf32", [False, True], ids=["3xtf32", "tf32"])
def test_fp32_lora_on_the_gpu_errs_like_torch_at_the_same_setting(tf32):
    # The fused kernels against fp64, beside torch's fp32 matmul with the same TF32 setting.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(512, 4096, generator=g).cuda()
    w = (torch.randn(1024, 4096, generator=g) / 64).cuda()
    a = (torch.randn(64, 4096, generator=g) / 64).cuda()
    b = (torch.randn(1024, 64, generator=g) / 8).cuda()
    exact = (x.double() @ w.double().t()) + 2.0 * (x.double() @ a.double().t()) @ b.double().t()
    with launch.allow_tf32(tf32):
        got = functional.lora_linear(x, w, None, a, b, 2.0, backend="triton")
        torch_way = x @ w.t() + 2.0 * (x @ a.t()) @ b.t()
    assert _error(got, exact) <= 2 * _error(torch_way, exact) + 1e-6
