"""Shared-input LoRA's ops: one down-projection launch for two or three adapters on the same x
(`lora_shared_down`), then each adapter's `lora_linear_up`. Checked against a PyTorch reference
built from the masks the kernel stored, and against each adapter's own `lora_linear` (the same
seeds give the same masks: equal bits)."""

import pytest
import torch

import fastpeft.functional as F
from fastpeft.ops import _counters
from fastpeft.ops import lora as lora_ops
from fastpeft.triton_path import lora as triton_lora

from .test_lora_mask_modes import unpack

M, K, R, P, S = 38, 80, 8, 0.3, 1.5  # M and K no multiple of the blocks; K: two K splits
WIDTHS = (48, 16, 16)  # q and two GQA k/v projections


def _adapters(device, members: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, M // 2, K, generator=g).to(device).requires_grad_()
    layers = []
    for n in WIDTHS[:members]:
        w = (torch.randn(n, K, generator=g) / K**0.5).to(device)
        b = torch.randn(n, generator=g).to(device)
        a = (torch.randn(R, K, generator=g) / K**0.5).to(device, dtype).requires_grad_()
        lb = torch.randn(n, R, generator=g).to(device, dtype).requires_grad_()  # B != 0
        layers.append((w, b, a, lb))
    return x, layers


def _loss(ys) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return sum((y * torch.randn(y.shape, generator=g).to(y.device)).sum() for y in ys)


def _shared(x, layers, p, backend):
    downs = F.lora_shared_down(x, [a for _, _, a, _ in layers], p, backend=backend)
    return [
        F.lora_linear_up(x, w, b, a, lb, S, p, down, backend=backend)
        for (w, b, a, lb), down in zip(layers, downs, strict=True)
    ], downs


def _grads(x, layers, ys):
    wrt = [x] + [t for _, _, a, lb in layers for t in (a, lb)]
    return torch.autograd.grad(_loss(ys), wrt)


@pytest.mark.parametrize("backend", ["triton", "hybrid"])
@pytest.mark.parametrize("members", [2, 3])
@pytest.mark.parametrize("p", [0.0, P])
def test_shared_down_equals_each_layer_on_its_own(device, backend, members, p):
    x, layers = _adapters(device, members)
    _counters.reset()
    torch.manual_seed(7)
    shared, _ = _shared(x, layers, p, backend)
    shared_grads = _grads(x, layers, shared)
    assert _counters.launches[f"lora_shared_down:{backend}"] == 1
    assert _counters.launches[f"lora_up:{backend}"] == members
    # Eager: the light Function, not the custom op (which torch.compile gets).
    assert all(type(y.grad_fn).__name__ == "ViewBackward0" for y in shared)
    assert all(type(y.grad_fn.next_functions[0][0]).__name__ == "EagerLoRALinearUpBackward"
               for y in shared)  # fmt: skip
    torch.manual_seed(7)  # the same seeds, drawn in the same order: the same masks
    alone = [F.lora_linear(x, w, b, a, lb, S, p, backend=backend) for w, b, a, lb in layers]
    alone_grads = _grads(x, layers, alone)
    for y_shared, y_alone in zip(shared, alone, strict=True):
        assert torch.equal(y_shared, y_alone)
    for g_shared, g_alone in zip(shared_grads, alone_grads, strict=True):
        assert torch.equal(g_shared, g_alone)
    assert all(g.abs().sum() > 0 for g in shared_grads)


def test_shared_down_matches_the_reference_through_each_mask(device):
    x, layers = _adapters(device, 3)
    x2d = x.detach().reshape(-1, K)
    downs = F.lora_shared_down(x, [a for _, _, a, _ in layers], P, backend="triton")
    masks = []
    for (_, _, a, _), down in zip(layers, downs, strict=True):
        keep = unpack(down.keep, K)
        # The stored mask is the one the seed gives (what the backward kernels would redraw).
        assert torch.equal(keep, triton_lora.keep_mask(down.seed, M, K, P))
        expected = (x2d * keep / (1 - P)) @ a.detach().t()
        torch.testing.assert_close(down.t, expected, rtol=1e-5, atol=1e-5)
        masks.append(keep)
    # Independent masks (PEFT: one dropout module per layer): each pair differs where exactly
    # one keeps, about 2 p (1 - p) of the positions.
    for i, j in ((0, 1), (0, 2), (1, 2)):
        differ = (masks[i] != masks[j]).float().mean().item()
        assert abs(differ - 2 * P * (1 - P)) < 0.06, (i, j, differ)


def test_each_follower_gets_its_own_seed_from_torch_in_order(device):
    x, layers = _adapters(device, 3)
    torch.manual_seed(21)
    downs = F.lora_shared_down(x, [a for _, _, a, _ in layers], P, backend="triton")
    torch.manual_seed(21)
    drawn = [torch.randint(0, 2**31 - 1, (1,), device=device) for _ in range(3)]
    assert [d.seed.item() for d in downs] == [s.item() for s in drawn]


def test_regenerated_masks_give_the_same_numbers(device, monkeypatch):
    x, layers = _adapters(device, 3)
    results = []
    for mode in ("bits", "regenerate"):
        monkeypatch.setenv("FASTPEFT_DROPOUT_MASK", mode)
        torch.manual_seed(4)
        ys, downs = _shared(x, layers, P, "triton")
        assert (downs[0].keep.numel() > 0) == (mode == "bits")
        results.append([y.detach() for y in ys] + list(_grads(x, layers, ys)))
    for stored, drawn in zip(*results, strict=True):
        assert torch.equal(stored, drawn)


def test_half_precision_adapters(device):
    x, layers = _adapters(device, 2, torch.float16)
    torch.manual_seed(2)
    shared, _ = _shared(x, layers, P, "triton")
    torch.manual_seed(2)
    alone = [F.lora_linear(x, w, b, a, lb, S, P, backend="triton") for w, b, a, lb in layers]
    for y_shared, y_alone in zip(shared, alone, strict=True):
        assert torch.equal(y_shared, y_alone)


def test_bad_arguments_name_themselves(device):
    x, layers = _adapters(device, 3)
    a = layers[0][2]
    with pytest.raises(ValueError, match="lora_as must be a list of 2 to 3"):
        F.lora_shared_down(x, [a], backend="triton")
    with pytest.raises(ValueError, match="lora_as must be a list of 2 to 3"):
        F.lora_shared_down(x, [a] * 4, backend="triton")
    with pytest.raises(ValueError, match=r"lora_as\[1\]"):
        F.lora_shared_down(x, [a, a[:4]], backend="triton")
    with pytest.raises(ValueError, match=r"lora_as\[1\].*dtype"):
        F.lora_shared_down(x, [a, a.half()], backend="triton")
    with pytest.raises(ValueError, match="dropout_p"):
        F.lora_shared_down(x, [a, a], 1.0, backend="triton")
    with pytest.raises(ValueError, match="shared-input LoRA runs on"):
        F.lora_shared_down(x, [a, a], backend="torch")
    downs = F.lora_shared_down(x, [a, a], backend="triton")
    w, b, _, lb = layers[0]
    with pytest.raises(ValueError, match="down must be a lora_shared_down share"):
        F.lora_linear_up(x[:, :3], w, b, a, lb, S, 0.0, downs[0], backend="triton")
    with pytest.raises(ValueError, match="Triton path"):
        F.lora_linear_up(x, w, b, a, lb, S, 0.0, downs[0], backend="torch")


@pytest.mark.parametrize("p", [0.0, P])
def test_opcheck_shared_ops(device, p):
    x, layers = _adapters(device, 3)
    x2d = x.detach().reshape(-1, K)
    lora_as = [a.detach() for _, _, a, _ in layers]
    seeds = [torch.tensor([s], device=device) for s in (5, 6, 7)] if p else []
    torch.library.opcheck(lora_ops.lora_shared_down, (x2d, lora_as, seeds, p, "triton"))
    t, keep = lora_ops.lora_shared_down(x2d, lora_as, seeds, p, "triton")
    w, b, a, lb = layers[1]
    up = (x2d.requires_grad_(), w, b, a, lb, t[:, 1], keep[1] if p else keep)
    torch.library.opcheck(lora_ops.lora_linear_up, (*up, seeds[1] if p else None, S, p, "triton"))
