"""fastpeft._C SPIDER entry points (csrc/cpu/spider.cpp) against the PyTorch path
(fastpeft/torch_path/importance.py), plus argument checks. Model-level tests: tests/spider."""

import pytest
import torch

from fastpeft import _C, testing
from fastpeft.torch_path import importance as ref

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# 0-d, 1 element, a constant tensor, zeros, and 150K elements (three 64K-element chunks).
SIZES = [(), (1,), (7, 9), (150_001,), (33,), (0,)]


def state(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    theta0 = [(torch.randn(s, generator=g)).to(DTYPES[i % 4]) for i, s in enumerate(SIZES)]
    theta0[4] = torch.full((33,), 0.5, dtype=theta0[4].dtype)
    G = [torch.randn(s, generator=g) for s in SIZES]
    G[2].zero_()
    grads = [torch.randn(s, generator=g).to(t.dtype) for s, t in zip(SIZES, theta0, strict=True)]
    grads[2].zero_()  # G[2] stays all zero
    return theta0, G, grads


def numels(ts):
    return torch.tensor([t.numel() for t in ts], dtype=torch.float64)


def test_accumulate_matches_torch():
    theta0, G, grads = state()
    G_ref = [g.clone() for g in G]
    got = _C.spider_accumulate(G, grads)
    want = ref.accumulate_(G_ref, grads, numels(G))
    assert all(torch.equal(a, b) for a, b in zip(G, G_ref, strict=True))
    testing.assert_close_fp32(got, want, rtol=1e-12, atol=0)


def test_select_and_blend_match_torch():
    theta0, G, grads = state(1)
    pre = _C.abs_moments(theta0)
    ft = _C.spider_accumulate(G, grads)
    sel = _C.spider_select_sums(theta0, G, pre, ft)
    sel_ref = ref.select_sums(theta0, G, pre, ft)
    testing.assert_close_fp32(sel[:, 1], sel_ref[:, 1], rtol=0, atol=0)  # counts: exact
    testing.assert_close_fp32(sel[:, 0], sel_ref[:, 0], rtol=1e-6)
    assert sel[2].tolist() == [0.0, 0.0]  # G all zero: nothing selected
    g = torch.Generator().manual_seed(2)
    w = [(t.double() + 0.1 * torch.randn(t.shape, generator=g, dtype=torch.float64)).to(t.dtype)
         for t in theta0]  # fmt: skip
    w_ref = [x.clone() for x in w]
    _C.spider_blend_(w, theta0, G, pre, ft, sel)
    ref.blend_(w_ref, theta0, G, pre, ft, sel)
    for i, (a, b) in enumerate(zip(w, w_ref, strict=True)):
        eps = torch.finfo(a.dtype).eps if a.dtype != torch.float64 else 1e-7
        testing.assert_close_fp32(a, b, rtol=2 * eps, name=f"w[{i}] {a.dtype}")
    assert torch.equal(w[2], w_ref[2])  # untouched bit for bit


def test_empty_lists():
    assert _C.spider_accumulate([], []).shape == (0, 3)
    empty = torch.zeros(0, 3, dtype=torch.float64)
    assert _C.spider_select_sums([], [], empty, empty).shape == (0, 2)


def test_argument_checks_name_the_bad_argument():
    G, g = [torch.zeros(4)], [torch.ones(4)]
    with pytest.raises(ValueError, match="grads has 2 tensors but G has 1"):
        _C.spider_accumulate(G, g * 2)
    with pytest.raises(ValueError, match=r"G\[0\] must be float32"):
        _C.spider_accumulate([torch.zeros(4, dtype=torch.half)], g)
    with pytest.raises(ValueError, match=r"\(grads\): tensors\[0\] must be contiguous"):
        _C.spider_accumulate([torch.zeros(4, 4)], [torch.ones(4, 4).t()])
    with pytest.raises(ValueError, match=r"G\[0\] has 4 elements but grads\[0\] has 5"):
        _C.spider_accumulate(G, [torch.ones(5)])
    with pytest.raises(ValueError, match=r"grads is on meta"):
        _C.spider_accumulate(G, [torch.ones(4, device="meta")])
    m = torch.zeros(1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"moments_ft must be a contiguous float64 tensor"):
        _C.spider_select_sums([torch.ones(4)], G, m, m.float())
    with pytest.raises(ValueError, match=r"w\[0\] is Half but theta0\[0\] is Float"):
        _C.spider_blend_([torch.ones(4).half()], [torch.ones(4)], G, m, m,
                         torch.zeros(1, 2, dtype=torch.float64))  # fmt: skip
    with pytest.raises(ValueError, match=r"select_sums must be .* shape \[1, 2\]"):
        _C.spider_blend_([torch.ones(4)], [torch.ones(4)], G, m, m, m)
