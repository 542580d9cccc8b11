"""fp32 products on tensor cores as 3xTF32 (launch.dot_flags) stay within fp32's own error, and
LoRA's rank-r term into a bf16 output in plain TF32 (launch.rank_term_precision) within PEFT's.

Without allow_tf32, every fp32 `tl.dot` of the kernels runs as "tf32x3": each operand split into
a TF32 high part and a TF32 remainder, three products summed in fp32. On the CPU the split is
emulated bit for bit (TF32 keeps 10 mantissa bits, rounded to nearest) and measured against an
fp64 reference beside torch's own fp32 matmul (PEFT's fp32 adapters); on a GPU the LoRA kernels
themselves are (gpu tier). The exception, the rank-r term s · t Bᵀ (u A for dx) that lands in a
bf16 y (dx), is measured the same way against PEFT's own rounding of y.
"""

import pytest
import torch
import triton
import triton.language as tl

from fastpeft import functional
from fastpeft.kernels._common import mma_widened, tf32_round
from fastpeft.triton_path import launch, lora_plan


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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_16bit_operand_needs_two_products_not_three(dtype):
    # bf16 and fp16 values are exact in TF32 (8 and 10 mantissa bits; fp32's exponent range), so
    # 3xTF32's product with their remainder is zero: two products give the same sum.
    g = torch.Generator().manual_seed(7)
    a = (torch.randn(256, 4096, generator=g) * 3).to(dtype).float()
    b = torch.randn(4096, 64, generator=g)
    assert torch.equal(_tf32(a), a)
    b_hi = _tf32(b)
    two = a @ _tf32(b - b_hi) + a @ b_hi
    exact = a.double() @ b.double()
    assert _error(two, exact) <= 2 * _error(a @ b, exact) + 1e-7


@triton.jit
def _round_kernel(v_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tf32_round(tl.load(v_ptr + offs)))


@triton.jit
def _widened_kernel(
    a_ptr, b_ptr, out_ptr, M: tl.constexpr, K: tl.constexpr, N: tl.constexpr,
    A_WIDENS: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    rows, inner, cols = tl.arange(0, M), tl.arange(0, K), tl.arange(0, N)
    a = tl.load(a_ptr + rows[:, None] * K + inner[None, :])
    b = tl.load(b_ptr + inner[:, None] * N + cols[None, :])
    acc = mma_widened(a, b, tl.zeros((M, N), dtype=tl.float32), A_WIDENS, True, PRECISION)
    tl.store(out_ptr + rows[:, None] * N + cols[None, :], acc)


def test_the_kernels_tf32_rounding_is_cvt_rna():
    g = torch.Generator().manual_seed(1)
    scales = 10.0 ** torch.randint(-30, 30, (1018,), generator=g)  # fp32's range, no subnormals
    special = torch.tensor([0.0, -0.0, 1.0, -1.5, float("inf"), 3e38])  # 3e38 rounds up to inf
    v = torch.cat([torch.randn(1018, generator=g) * scales, special])
    out = torch.empty_like(v)
    _round_kernel[(1,)](v, out, BLOCK=1024)
    assert torch.equal(out.view(torch.int32), _tf32(v).view(torch.int32))


@pytest.mark.parametrize("a_widens", [True, False])
@pytest.mark.parametrize("precision", ["tf32x3", "ieee"])
def test_mixed_product_of_a_16bit_and_an_fp32_tile(a_widens, precision):
    # The helper the LoRA kernels use where x (16-bit) meets fp32 adapter tiles: in "tf32x3" it
    # runs the two products above (the interpreter multiplies TF32 inputs in fp32, so this checks
    # the split's wiring; the GPU tier checks the tensor cores), else one plain product.
    g = torch.Generator().manual_seed(2)
    M, K, N = 32, 64, 16
    narrow = torch.randn(M if a_widens else K, K if a_widens else N, generator=g).half()
    wide = torch.randn(K if a_widens else M, N if a_widens else K, generator=g)
    a, b = (narrow, wide) if a_widens else (wide, narrow)
    out = torch.empty(M, N)
    _widened_kernel[(1,)](a, b, out, M, K, N, a_widens, precision)
    exact = a.double() @ b.double()
    assert _error(out, exact) < 1e-6


def test_the_dot_precision_follows_torchs_tf32_switch():
    hopper = launch.Target("cuda", 90)
    with launch.allow_tf32(False):
        assert launch.dot_flags(hopper)["PRECISION"] == "tf32x3"
    with launch.allow_tf32(True):
        assert launch.dot_flags(hopper)["PRECISION"] == "tf32"
    assert launch.dot_flags(launch.INTERPRETER) == {"UPCAST": True, "PRECISION": "ieee"}


def _ulp_errors(got: torch.Tensor, exact: torch.Tensor, mantissa_bits: int) -> torch.Tensor:
    """|got − exact| in units of the last place of `exact` in a format with `mantissa_bits`
    explicit mantissa bits (bf16: 7)."""
    ulp = torch.exp2(exact.abs().clamp_min(1e-30).log2().floor() - mantissa_bits)
    return (got.double() - exact).abs() / ulp


def _lora_y_ways(b_scale: float, seed: int, M=1024, K=1024, N=1024, R=128, s=16 / 128) -> dict:
    """The exact y (fp64) and bf16 y's computed PEFT's way and the fused kernel's ways, for bf16 x
    and W and fp32 A and B (PEFT's default, Paper A's rank): the rank term's operands in TF32
    (launch.rank_term_precision), as 3xTF32, and cut to bf16 (a term too coarse, for contrast)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g).bfloat16()
    w = (torch.randn(N, K, generator=g) / K**0.5).bfloat16()
    a = (torch.rand(R, K, generator=g) * 2 - 1) / K**0.5  # kaiming-uniform's scale
    b = torch.randn(N, R, generator=g) * b_scale  # trained: B no longer zero
    base = x.float() @ w.float().t()  # the fp32 accumulator of the bf16 GEMM
    t = x.float() @ a.t()  # the down kernel's fp32 t (two-product split: exact products)

    def fused(rounded):  # one fp32 accumulator, rounded to bf16 once
        term = rounded(t).double() @ rounded(b).double().t()
        return (base + s * term.float()).bfloat16()

    return {
        "exact": x.double() @ w.double().t() + s * (x.double() @ a.double().t()) @ b.double().t(),
        # PEFT: the base output rounded to bf16, the fp32 rank term added, the sum rounded again.
        "peft": (base.bfloat16().float() + s * (t @ b.t())).bfloat16(),
        "tf32": fused(_tf32),
        "3xtf32": (base + s * _three_tf32(t, b.t())).bfloat16(),
        "bf16": fused(lambda v: v.bfloat16()),
    }


@pytest.mark.parametrize("b_scale", [0.02, 0.1, 0.5], ids=lambda v: f"B~{v}")
def test_a_tf32_rank_term_into_bf16_errs_less_than_peft(b_scale):
    # |s t Bᵀ| / |x Wᵀ| is about 0.016, 0.08 and 0.4 here. PEFT rounds to bf16 twice; the fused
    # kernel rounds once, so its TF32 operands (2^-11 each) still leave y closer to the exact one
    # than PEFT's, on average and in the tail. dx has the same form (u A added to dy W, PEFT
    # summing two bf16 gradients), as the GPU tier checks on the kernels themselves.
    ways = _lora_y_ways(b_scale, seed=int(b_scale * 100))
    exact = ways.pop("exact")
    errors = {name: _ulp_errors(y, exact, 7) for name, y in ways.items()}
    mean = {name: float(e.mean()) for name, e in errors.items()}
    tail = {name: float(e.flatten()[::7].quantile(0.9999)) for name, e in errors.items()}
    assert mean["3xtf32"] <= mean["tf32"] < mean["peft"], mean
    assert tail["tf32"] < tail["peft"], tail
    if b_scale >= 0.1:  # the check can tell: operands cut to bf16's 8 bits err past PEFT's tail
        assert tail["bf16"] > tail["peft"], tail


def test_the_rank_term_takes_tf32_only_into_bf16(monkeypatch):
    hopper = launch.Target("cuda", 90)
    with launch.allow_tf32(False):
        flags = launch.dot_flags(hopper)
        assert launch.rank_term_precision(flags, torch.bfloat16) == "tf32"
        # fp16's 10 mantissa bits match TF32's: a TF32 term would err past PEFT's rounding.
        assert launch.rank_term_precision(flags, torch.float16) == "tf32x3"
        assert launch.rank_term_precision(flags, torch.float32) == "tf32x3"
        configs = lora_plan.launch_configs(hopper, torch.bfloat16, torch.float32, 128)
        assert configs["fwd"]["RANK_PRECISION"] == configs["dx"]["RANK_PRECISION"] == "tf32"
        assert configs["shared"]["PRECISION"] == "tf32x3"  # t, u, dA and dB keep 3xTF32
        monkeypatch.setenv("FASTPEFT_RANK_TERM_TF32", "off")
        assert launch.rank_term_precision(flags, torch.bfloat16) == "tf32x3"
        monkeypatch.setenv("FASTPEFT_RANK_TERM_TF32", "sometimes")
        with pytest.raises(ValueError, match="FASTPEFT_RANK_TERM_TF32"):
            launch.rank_term_precision(flags, torch.bfloat16)
    with launch.allow_tf32(True):
        assert launch.rank_term_precision(launch.dot_flags(hopper), torch.bfloat16) == "tf32"
    interpreter = launch.dot_flags(launch.INTERPRETER)
    assert launch.rank_term_precision(interpreter, torch.bfloat16) == "ieee"


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


@pytest.mark.gpu
@pytest.mark.parametrize("tf32", [False, True], ids=["3xtf32", "tf32"])
def test_fp32_adapters_on_a_bf16_base_on_the_gpu(tf32):
    # PEFT's default (Paper A's): bf16 activations, fp32 adapters. The kernels multiply the bf16
    # x (exact in TF32) with fp32 A and B tiles in two products instead of 3xTF32's three.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(512, 4096, generator=g).cuda().bfloat16()
    w = (torch.randn(1024, 4096, generator=g) / 64).cuda().bfloat16()
    a = (torch.randn(64, 4096, generator=g) / 64).cuda().requires_grad_()
    b = (torch.randn(1024, 64, generator=g) / 8).cuda().requires_grad_()
    dy = torch.randn(512, 1024, generator=g).cuda().bfloat16()
    x64, a64, b64 = x.double(), a.detach().double(), b.detach().double()
    t64 = x64 @ a64.t()
    want_da, want_db = 2.0 * (dy.double() @ b64).t() @ x64, 2.0 * dy.double().t() @ t64
    with launch.allow_tf32(tf32):
        y = functional.lora_linear(x, w, None, a, b, 2.0, backend="triton")
        y.backward(dy)
        t32 = x.float() @ a.detach().t()  # torch's fp32 matmuls at the same setting
        torch_da = (2.0 * (dy.float() @ b.detach())).t() @ x.float()
        torch_db = 2.0 * dy.float().t() @ t32
    assert _error(a.grad, want_da) <= 2 * _error(torch_da, want_da) + 1e-6
    assert _error(b.grad, want_db) <= 2 * _error(torch_db, want_db) + 1e-6


@pytest.mark.gpu
@pytest.mark.parametrize("rank_term", ["on", "off"])
def test_fp32_adapters_into_bf16_y_and_dx_err_less_than_peft_on_the_gpu(monkeypatch, rank_term):
    # The kernels themselves, TF32 off in torch: y's s t Bᵀ and dx's u A in plain TF32 ("on", the
    # default) or 3xTF32 ("off"), against fp64, beside PEFT's way of rounding y and dx.
    monkeypatch.setenv("FASTPEFT_RANK_TERM_TF32", rank_term)
    g = torch.Generator().manual_seed(5)
    M, K, N, R, s = 2048, 1024, 1024, 128, 16 / 128
    x = torch.randn(M, K, generator=g).cuda().bfloat16()
    w = (torch.randn(N, K, generator=g) / K**0.5).cuda().bfloat16()
    a = ((torch.rand(R, K, generator=g) * 2 - 1) / K**0.5).cuda()
    b = (torch.randn(N, R, generator=g) * 0.1).cuda()
    dy = torch.randn(M, N, generator=g).cuda().bfloat16()
    x64, w64, a64, b64, dy64 = (v.double() for v in (x, w, a, b, dy))
    want_y = x64 @ w64.t() + s * (x64 @ a64.t()) @ b64.t()
    want_dx = dy64 @ w64 + s * (dy64 @ b64) @ a64
    with launch.allow_tf32(False):
        xg = x.clone().requires_grad_()
        y = functional.lora_linear(xg, w, None, a, b, s, backend="triton")
        y.backward(dy)
        peft_y = ((x @ w.t()).float() + s * (x.float() @ a.t()) @ b.t()).bfloat16()
        peft_dx = (dy @ w) + (s * (dy.float() @ b) @ a).bfloat16()  # two bf16 grads, summed
    for got, peft, want in ((y, peft_y, want_y), (xg.grad, peft_dx, want_dx)):
        err, err_peft = _ulp_errors(got, want, 7), _ulp_errors(peft, want, 7)
        assert err.mean() < err_peft.mean(), (err.mean(), err_peft.mean())
        tail = [e.flatten()[::7].quantile(0.9999) for e in (err, err_peft)]
        assert tail[0] <= tail[1], tail
