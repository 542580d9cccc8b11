"""pytest-benchmark microbenchmarks of fastpeft's ops against their plain-PyTorch equivalents.

Separate from the test suite (testpaths is tests/); run with

    pytest benchmarks --benchmark-only [--benchmark-json out.json]

On a CUDA machine the ops run their Triton kernels in bf16; elsewhere the PyTorch path in fp32 at
CPU-sized shapes. Each benchmark first checks the fused op against the plain version, so a wrong
op fails instead of posting a time.
"""

import pytest
import torch

import fastpeft
from fastpeft.ops import adapter as adapter_ops
from fastpeft.reference import adapter as adapter_reference
from fastpeft.spider import Spider

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.bfloat16 if CUDA else torch.float32
M, K, N, R = (8192, 4096, 4096, 16) if CUDA else (512, 512, 512, 16)
TOLERANCE = 3e-2 if CUDA else 1e-4


def _sync():
    if CUDA:
        torch.cuda.synchronize()


def _leaf(*shape, scale=1.0, dtype=DTYPE):
    return (scale * torch.randn(*shape, device=DEVICE)).to(dtype).requires_grad_()


def _check(fused, plain):
    with torch.no_grad():
        want = plain().float()
        err = float((fused().float() - want).abs().max())
    assert err <= TOLERANCE * float(want.abs().max()), f"fused op off by {err:.3e}"


def _train_call(fn, x, dy):
    def run():
        x.grad = None
        fn().backward(dy)
        _sync()

    return run


@pytest.mark.parametrize("impl", ["plain", "fastpeft"])
def test_lora_linear(benchmark, impl):
    x, a, b = _leaf(M, K), _leaf(R, K, scale=K**-0.5), _leaf(N, R, scale=R**-0.5)
    w = torch.randn(N, K, device=DEVICE).to(DTYPE) * K**-0.5
    dy = torch.randn(M, N, device=DEVICE, dtype=DTYPE)

    def plain():
        return torch.nn.functional.linear(x, w) + 2.0 * ((x @ a.t()) @ b.t())

    def fused():
        return fastpeft.lora_linear(x, w, None, a, b, 2.0)

    _check(fused, plain)
    benchmark(_train_call(fused if impl == "fastpeft" else plain, x, dy))


@pytest.mark.parametrize("feedforward", [False, True], ids=["output-scale", "input-scale"])
@pytest.mark.parametrize("impl", ["plain", "fastpeft"])
def test_ia3_linear(benchmark, impl, feedforward):
    x = _leaf(M, K)
    w = torch.randn(N, K, device=DEVICE).to(DTYPE) * K**-0.5
    vector = (1 + 0.3 * torch.randn(K if feedforward else N, device=DEVICE)).requires_grad_()
    dy = torch.randn(M, N, device=DEVICE, dtype=DTYPE)

    def plain():
        if feedforward:
            return torch.nn.functional.linear(x * vector.to(DTYPE), w)
        return torch.nn.functional.linear(x, w) * vector.to(DTYPE)

    def fused():
        return fastpeft.ia3_linear(x, w, None, vector, feedforward)

    _check(fused, plain)
    benchmark(_train_call(fused if impl == "fastpeft" else plain, x, dy))


@pytest.mark.parametrize("impl", ["plain", "fastpeft"])
def test_adapter(benchmark, impl):
    d, h = K, 256 if CUDA else 64
    z, w_down, w_up = _leaf(M, d), _leaf(h, d, scale=0.02), _leaf(d, h, scale=0.02)
    dy = torch.randn(M, d, device=DEVICE, dtype=DTYPE)

    def plain():
        return adapter_reference.adapter(z, w_down, w_up, 1.0, "tanh")

    def fused():
        return adapter_ops.adapter(z, w_down, w_up, 1.0, "tanh")

    _check(fused, plain)
    benchmark(_train_call(fused if impl == "fastpeft" else plain, z, dy))


@pytest.mark.parametrize("impl", ["adamw", "spider"])
def test_spider_step_vs_adamw(benchmark, impl):
    shapes = [(N, K)] * 4 + [(4 * K, K)] * 2
    params = [torch.nn.Parameter(torch.randn(s, device=DEVICE).to(DTYPE) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    if impl == "spider":
        step = Spider(params).step
    else:
        optimizer = torch.optim.AdamW(params, lr=1e-5, fused=CUDA, foreach=not CUDA)
        step = optimizer.step

    def run():
        step()
        _sync()

    benchmark(run)
