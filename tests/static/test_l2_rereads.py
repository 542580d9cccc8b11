"""The static model's L2 traffic of the adapter kernels (kernels/adapter.py REREADS, reported as
`l2_bytes`) against the loads the kernels make: each launch of a forward and backward runs under
Triton's interpreter with every masked load's addresses counted, and the bytes loaded from each
tensor argument must equal one read of it plus what REREADS says its tile walks read again.
Ragged shapes (no dimension a multiple of its block), fp32 weights (the interpreter has no bf16),
no dropout (the masks' bits are loaded a byte an element, not a tile)."""

import collections
import contextlib

import numpy as np
import pytest
import torch
from triton.runtime import interpreter

from fastpeft.kernels import adapter as kernels
from fastpeft.static.launches import named_args
from fastpeft.triton_path import adapter, launch

M, D, H = 70, 80, 48  # 3 row blocks, 3 D blocks, 2 H blocks of the interpreter's 32


@contextlib.contextmanager
def _counting_loads():
    """A Counter of byte addresses, one count per element a masked load reads."""
    counts: collections.Counter = collections.Counter()
    original = interpreter.InterpreterBuilder.create_masked_load

    def counted(self, ptrs, mask, other, cache_policy, is_volatile):
        counts.update(ptrs.data[mask.data].ravel().tolist())
        return original(self, ptrs, mask, other, cache_policy, is_volatile)

    interpreter.InterpreterBuilder.create_masked_load = counted
    try:
        yield counts
    finally:
        interpreter.InterpreterBuilder.create_masked_load = original


def _addresses(t: torch.Tensor) -> np.ndarray:
    """The byte address of every element of a (strided) view."""
    index = np.indices(tuple(t.shape)).reshape(t.dim(), -1)
    offsets = (np.array(t.stride())[:, None] * index).sum(axis=0)
    return t.data_ptr() + offsets * t.element_size()


def _recorded(run) -> list[tuple]:
    found = []
    with launch.recording(launch.INTERPRETER, lambda *a: found.append(a)):
        run()
    return found


def _check(found) -> list[str]:
    """Runs the recorded launches in order; returns the adapter kernels checked."""
    checked = []
    for kernel, grid, args, kwargs in found:
        name = kernel.fn.__name__
        if name not in kernels.REREADS:  # the fixed-order sums of the weight gradients' partials
            kernel[grid](*args, **kwargs)
            continue
        tensors = {id(v): v for v in args if isinstance(v, torch.Tensor)}.values()
        with _counting_loads() as counts:
            kernel[grid](*args, **kwargs)
        loaded = {id(t): sum(counts[a] for a in _addresses(t).tolist()) * t.element_size()
                  for t in tensors}  # fmt: skip
        once = sum(t.numel() * t.element_size() for t in tensors if loaded[id(t)])
        rereads = kernels.REREADS[name](named_args(kernel, args, kwargs))
        assert sum(loaded.values()) == once + rereads, (name, grid, sum(loaded.values()), once,
                                                        rereads)  # fmt: skip
        checked.append(name)
    return checked


def _weights(*shape) -> torch.Tensor:
    return torch.randn(*shape) * 0.1


@pytest.mark.parametrize("pair", [False, True], ids=["single", "pair"])
def test_rereads_equal_the_loads_the_kernels_make(pair):
    torch.manual_seed(0)
    x, dy, dy2 = torch.randn(M, D), torch.randn(M, D), torch.randn(M, D)
    w = [(_weights(H, D), _weights(D, H)) for _ in range(2)]
    if pair:
        u, v, pre, keep = adapter.forward_pair(x, *w[0], *w[1], None, 0.7, 0.0, "tanh")
        fwd = _recorded(lambda: adapter.forward_pair(x, *w[0], *w[1], None, 0.7, 0.0, "tanh"))
        bwd = _recorded(lambda: adapter.backward_pair(dy, dy2, x, *w[0], *w[1], pre, keep, None,
                                                      0.7, 0.0, "tanh", True))  # fmt: skip
    else:
        out, pre, keep = adapter.forward(x, *w[0], None, None, 0.7, 0.0, "relu")
        fwd = _recorded(lambda: adapter.forward(x, *w[0], None, None, 0.7, 0.0, "relu"))
        bwd = _recorded(lambda: adapter.backward(dy, x, *w[0], pre, keep, None, 0.7, 0.0, "relu",
                                                 True, True))  # fmt: skip
    checked = _check(fwd) + _check(bwd)
    expected = {"adapter_down_kernel", "adapter_up_kernel", "adapter_dpre_kernel",
                "adapter_dw_up_kernel", "adapter_dw_down_kernel", "adapter_dz_kernel"}  # fmt: skip
    assert set(checked) == expected


def test_the_check_can_tell_a_wrong_reread_count(monkeypatch):
    # Counting z once per H block too few in the down kernel must fail the comparison.
    right = kernels.REREADS["adapter_down_kernel"]

    def one_walk_short(a) -> int:
        return right(a) - a["z_ptr"].numel() * a["z_ptr"].element_size()

    monkeypatch.setitem(kernels.REREADS, "adapter_down_kernel", one_walk_short)
    x = torch.randn(M, D)
    wd, wu = _weights(H, D), _weights(D, H)
    with pytest.raises(AssertionError, match="adapter_down_kernel"):
        _check(_recorded(lambda: adapter.forward(x, wd, wu, None, None, 0.7, 0.0, "relu")))
