"""The static model's L2 traffic of the Triton kernels (each kernel module's REREADS, reported as
`l2_bytes`) against the loads the kernels make: each launch of a forward and backward runs under
Triton's interpreter with every masked load's addresses counted, and the bytes loaded from each
tensor argument must equal one read of it plus what REREADS says its tile walks read again.
Ragged shapes (no dimension a multiple of its block), fp32 or fp16 operands (the interpreter has
no bf16), no dropout (the masks' bits are loaded a byte an element, not a tile)."""

import collections
import contextlib

import numpy as np
import pytest
import torch
from triton.runtime import interpreter

from fastpeft.kernels import adapter as adapter_kernels
from fastpeft.static.costing import kernel_module_and_name
from fastpeft.static.launches import named_args
from fastpeft.triton_path import adapter, ia3, ia3_hybrid, launch, lora, lora_hybrid

M, D, H = 70, 80, 48  # adapters: 3 row blocks, 3 D blocks, 2 H blocks of the interpreter's 32
K, N = 80, 72  # LoRA and IA3: x [M, K], W [N, K]: 3 blocks of 32 along each


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
    """Runs the recorded launches in order, each checked against its module's REREADS; returns
    the kernels checked (every one launched: a kernel without an entry fails)."""
    checked = []
    for kernel, grid, args, kwargs in found:
        module, name = kernel_module_and_name(kernel)
        assert name in getattr(module, "REREADS", {}), f"{module.__name__}: no REREADS for {name}"
        tensors = {id(v): v for v in args if isinstance(v, torch.Tensor)}.values()
        with _counting_loads() as counts:
            kernel[grid](*args, **kwargs)
        loaded = {id(t): sum(counts[a] for a in _addresses(t).tolist()) * t.element_size()
                  for t in tensors}  # fmt: skip
        once = sum(t.numel() * t.element_size() for t in tensors if loaded[id(t)])
        rereads = module.REREADS[name](named_args(kernel, args, kwargs))
        assert sum(loaded.values()) == once + rereads, (name, grid, sum(loaded.values()), once,
                                                        rereads)  # fmt: skip
        checked.append(name)
    return checked


def _weights(*shape, dtype=torch.float32) -> torch.Tensor:
    return (torch.randn(*shape) * 0.1).to(dtype)


def _forward_and_backward(forward, backward) -> list[str]:
    """Records `forward()`'s launches, runs it for real, records `backward(result)`'s, then
    checks both in order."""
    fwd = _recorded(forward)
    result = forward()
    return _check(fwd) + _check(_recorded(lambda: backward(result)))


@pytest.mark.parametrize("pair", [False, True], ids=["single", "pair"])
def test_adapter_rereads_equal_the_loads_the_kernels_make(pair):
    torch.manual_seed(0)
    x, dy, dy2 = torch.randn(M, D), torch.randn(M, D), torch.randn(M, D)
    w = [(_weights(H, D), _weights(D, H)) for _ in range(2)]
    if pair:
        checked = _forward_and_backward(
            lambda: adapter.forward_pair(x, *w[0], *w[1], None, 0.7, 0.0, "tanh"),
            lambda out: adapter.backward_pair(
                dy, dy2, x, *w[0], *w[1], out[2], out[3], None, 0.7, 0.0, "tanh", True
            ),  # fmt: skip
        )
    else:
        checked = _forward_and_backward(
            lambda: adapter.forward(x, *w[0], None, None, 0.7, 0.0, "relu"),
            lambda out: adapter.backward(
                dy, x, *w[0], out[1], out[2], None, 0.7, 0.0, "relu", True, True
            ),  # fmt: skip
        )
    expected = {"adapter_down_kernel", "adapter_up_kernel", "adapter_dpre_kernel",
                "adapter_dw_up_kernel", "adapter_dw_down_kernel", "adapter_dz_kernel"}  # fmt: skip
    assert expected <= set(checked)


# (host, base and adapter dtype, rank, bias, need_dx): the fused path (fp32; fp16 with dA in
# lora_dx_kernel, whose last chunk walks a row block past M), the hybrid path (y and dx read in
# place), a wide rank (dB by lora_da_kernel), no dx (dA by lora_da_kernel).
LORA_CASES = {
    "fused fp32": (lora, torch.float32, 8, False, True),
    "fused fp16 dA in dx, bias": (lora, torch.float16, 8, True, True),
    "hybrid": (lora_hybrid, torch.float32, 8, True, True),
    "wide rank": (lora, torch.float32, 64, False, True),
    "no dx": (lora, torch.float32, 8, False, False),
}


@pytest.mark.parametrize("case", list(LORA_CASES))
def test_lora_rereads_equal_the_loads_the_kernels_make(case):
    host, dtype, rank, has_bias, need_dx = LORA_CASES[case]
    torch.manual_seed(0)
    x, dy = torch.randn(M, K).to(dtype), torch.randn(M, N).to(dtype)
    w, a, b = _weights(N, K, dtype=dtype), _weights(rank, K, dtype=dtype), _weights(N, rank)
    b, bias = b.to(dtype), _weights(N, dtype=dtype) if has_bias else None
    checked = _forward_and_backward(
        lambda: host.forward(x, w, bias, a, b, None, 2.0, 0.0),
        lambda out: host.backward(dy, x, w, a, b, out[1], out[2], None, 2.0, 0.0, need_dx),
    )
    expected = {"lora_down_kernel", "lora_fwd_kernel", "lora_dy_b_kernel"}
    expected |= {"lora_dx_kernel"} if need_dx else {"lora_da_kernel"}
    assert expected <= set(checked)


def test_shared_input_lora_rereads_equal_the_loads_the_kernel_makes():
    # Three adapters on one x: lora_down_kernel reads each member's A once per row block.
    torch.manual_seed(0)
    x = torch.randn(M, K)
    checked = _check(_recorded(lambda: lora.shared_down(x, [_weights(8, K) for _ in range(3)],
                                                        [None] * 3, 0.0)))  # fmt: skip
    assert "lora_down_kernel" in checked


# (host, input scaling, bias, need_dx, need_dl)
IA3_CASES = {
    "output fused": (ia3, False, True, True, True),
    "output fused dx only": (ia3, False, False, True, False),
    "output fused dl only": (ia3, False, False, False, True),
    "input fused": (ia3, True, True, True, True),
    "input fused dl only": (ia3, True, False, False, True),
    "output hybrid": (ia3_hybrid, False, True, True, True),
    "input hybrid": (ia3_hybrid, True, False, True, True),
}


@pytest.mark.parametrize("case", list(IA3_CASES))
def test_ia3_rereads_equal_the_loads_the_kernels_make(case):
    host, feedforward, has_bias, need_dx, need_dl = IA3_CASES[case]
    torch.manual_seed(0)
    x, dy, w = torch.randn(M, K), torch.randn(M, N), _weights(N, K)
    vector = 1.0 + _weights(K if feedforward else N)
    bias = _weights(N) if has_bias else None
    checked = _forward_and_backward(
        lambda: host.forward(x, w, bias, vector, feedforward, not feedforward),
        lambda out: host.backward(
            dy, x if feedforward else out[1], w, vector, feedforward, need_dx, need_dl
        ),  # fmt: skip
    )
    assert checked and all(name.startswith("ia3_") or name == "sum_partials_kernel"
                           for name in checked)  # fmt: skip


def test_the_check_can_tell_a_wrong_reread_count(monkeypatch):
    # Counting z once per H block too few in the down kernel must fail the comparison.
    right = adapter_kernels.REREADS["adapter_down_kernel"]

    def one_walk_short(a) -> int:
        return right(a) - a["z_ptr"].numel() * a["z_ptr"].element_size()

    monkeypatch.setitem(adapter_kernels.REREADS, "adapter_down_kernel", one_walk_short)
    x = torch.randn(M, D)
    wd, wu = _weights(H, D), _weights(D, H)
    with pytest.raises(AssertionError, match="adapter_down_kernel"):
        _check(_recorded(lambda: adapter.forward(x, wd, wu, None, None, 0.7, 0.0, "relu")))


def test_the_check_can_tell_a_phantom_row_block_left_out(monkeypatch):
    # lora_dx_kernel's last chunk walks a row block past M and still loads W's tiles: a count
    # of the row blocks inside M only must fail (fp16: dA rides along, two blocks a program).
    from fastpeft.kernels import lora as lora_kernels

    right = lora_kernels.REREADS["lora_dx_kernel"]

    def inside_m_only(a) -> int:
        return right(a) - a["w_ptr"].numel() * a["w_ptr"].element_size()

    torch.manual_seed(0)
    x, dy = torch.randn(M, K).half(), torch.randn(M, N).half()
    w, a, b = _weights(N, K).half(), _weights(8, K).half(), _weights(N, 8).half()
    y, t, keep = lora.forward(x, w, None, a, b, None, 2.0, 0.0)
    found = _recorded(lambda: lora.backward(dy, x, w, a, b, t, keep, None, 2.0, 0.0, True))
    monkeypatch.setitem(lora_kernels.REREADS, "lora_dx_kernel", inside_m_only)
    with pytest.raises(AssertionError, match="lora_dx_kernel"):
        _check(found)
