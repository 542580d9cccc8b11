"""fastpeft._C.abs_moments against a float64 PyTorch reference.

The extension is imported directly (no importorskip): CI builds it, so a missing build must fail.
"""

import os

import pytest
import torch

from fastpeft import _C, _ext

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# 65537 and 3x70001 span several 64K-element chunks; () is a 0-d tensor.
SHAPES = [(), (1,), (7,), (65537,), (3, 1000), (3, 70001)]


def reference(tensors):
    rows = [[t.double().abs().sum(), t.double().square().sum(), t.numel()] for t in tensors]
    return torch.tensor(rows, dtype=torch.float64).reshape(len(tensors), 3)


def check(tensors, rtol=1e-12):
    got = _C.abs_moments(tensors)
    assert got.dtype == torch.float64 and got.shape == (len(tensors), 3)
    # Only the summation order differs from the reference, so float64 rounding bounds the error.
    torch.testing.assert_close(got.cpu(), reference([t.cpu() for t in tensors]), rtol=rtol, atol=0)
    return got


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(dtype, shape):
    check([(torch.randn(shape) * 3).to(dtype)])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_constant_and_zeros(dtype):
    const = torch.full((100_003,), -0.1, dtype=dtype)
    got = check([const, torch.zeros(65536 * 2, dtype=dtype)])
    v = const[0].double().item()
    torch.testing.assert_close(got[0, 2], torch.tensor(100_003.0, dtype=torch.float64))
    assert abs(got[0, 0].item() - 100_003 * abs(v)) <= 1e-9 * 100_003 * abs(v)
    assert got[1].tolist() == [0.0, 0.0, 131072.0]


def test_empty_list_and_empty_tensors():
    out = _C.abs_moments([])
    assert out.shape == (0, 3) and out.dtype == torch.float64 and out.device.type == "cpu"
    got = _C.abs_moments([torch.empty(0), torch.ones(2, 3), torch.empty(0, 5, dtype=torch.half)])
    assert got.tolist() == [[0.0, 0.0, 0.0], [6.0, 6.0, 6.0], [0.0, 0.0, 0.0]]


def test_many_small_mixed_tensors():
    gen = torch.Generator().manual_seed(1)
    sizes = torch.randint(0, 50, (300,), generator=gen).tolist()
    tensors = [torch.randn(s, generator=gen).to(DTYPES[i % 3]) for i, s in enumerate(sizes)]
    check(tensors)


def test_float64_input():
    check([torch.randn(70_000, dtype=torch.float64)])


def test_non_contiguous_names_argument():
    ok = torch.randn(4, 4)
    with pytest.raises(ValueError, match=r"tensors\[1\] must be contiguous"):
        _C.abs_moments([ok, ok.t()])
    with pytest.raises(ValueError, match=r"tensors\[0\] must be contiguous"):
        _C.abs_moments([torch.randn(10)[::2]])


def test_bad_dtype_and_device_name_argument():
    with pytest.raises(ValueError, match=r"tensors\[2\] .*dtype Long"):
        _C.abs_moments([torch.randn(3), torch.randn(3), torch.arange(3)])
    # The meta device stands in for a second device on a CPU-only machine.
    with pytest.raises(ValueError, match=r"tensors\[1\] is on device meta"):
        _C.abs_moments([torch.randn(3), torch.empty(3, device="meta")])
    with pytest.raises(ValueError, match=r"unsupported device meta"):
        _C.abs_moments([torch.empty(3, device="meta")])


def test_deterministic_across_calls_and_threads():
    gen = torch.Generator().manual_seed(2)
    tensors = [torch.randn(1_000_003, generator=gen), torch.randn(300, 1001, generator=gen).half()]
    tensors += [torch.randn(17, generator=gen).bfloat16() for _ in range(40)]
    first = _C.abs_moments(tensors)
    assert torch.equal(first, _C.abs_moments(tensors))
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert torch.equal(first, _C.abs_moments(tensors)), f"differs with {threads} threads"
    finally:
        torch.set_num_threads(saved)


def test_has_cuda_matches_build():
    if torch.version.cuda is None:  # a CPU build of torch can only produce a CPU-only extension
        assert _C.has_cuda() is False
    else:
        assert isinstance(_C.has_cuda(), bool)


def test_python_wrapper():
    assert _ext.available() and _ext.require() is _C
    x = torch.randn(5, 7)
    assert torch.equal(_ext.abs_moments((x, x)), _C.abs_moments([x, x]))


# --- GPU tier (skipped without CUDA by tests/conftest.py) ---------------------------------------


def _need_cuda_build():
    if not _C.has_cuda():
        if os.environ.get("FASTPEFT_NO_CUDA", "") not in ("", "0"):
            pytest.skip("built with FASTPEFT_NO_CUDA")
        pytest.fail("GPU present but fastpeft._C was built without CUDA; rebuild with the toolkit")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=str)
def test_cuda_matches_reference(dtype):
    _need_cuda_build()
    # 200 tensors overflow one launch's tables (64 segments / 128 rows); empty ones mixed in.
    gen = torch.Generator().manual_seed(3)
    sizes = [0, 1, 65536, 65537, 1_000_001] + torch.randint(0, 3000, (200,), generator=gen).tolist()
    tensors = [torch.randn(s, generator=gen).to(dtype).cuda() for s in sizes]
    got = check(tensors)
    assert got.device == tensors[0].device
    assert torch.equal(got, _C.abs_moments(tensors))


@pytest.mark.gpu
def test_cuda_errors():
    x = torch.randn(4, 4, device="cuda")
    if not _C.has_cuda():
        with pytest.raises(RuntimeError, match="built without CUDA"):
            _C.abs_moments([x])
        return
    with pytest.raises(ValueError, match=r"tensors\[1\] is on device cpu"):
        _C.abs_moments([x, torch.randn(3)])
    with pytest.raises(ValueError, match=r"tensors\[1\] must be contiguous"):
        _C.abs_moments([x, x.t()])
