"""The Triton kernels' dropout keep-mask has the statistics dropout needs.

kernels/_common.py's `dropout_keep` spends one 7-round Philox call on eight neighbouring columns
(each half of each of its four 32-bit numbers is one 16-bit uniform number). That must not show
in the mask: the keep rate is 1 - p at every threshold, the same for each of the eight 16-bit
numbers a call gives (lanes: the low and high halves alike), neighbouring elements (in a row,
across lanes and calls, and in a column) are uncorrelated, and masks of different seeds (the
layers of a model, the forward of one against the backward of another) are independent. Each
check allows 5 standard errors; the seeds are fixed, so the outcome is deterministic.
"""

import math

import pytest
import torch

from fastpeft import functional

M, K = 256, 256  # 64 programs of the keep-mask kernel under the interpreter
SIGMAS = 5.0


def _mask(seed: int, p: float, shape=(M, K)) -> torch.Tensor:
    return functional.dropout_keep_mask(torch.tensor([seed]), shape, p, backend="triton")


def _within(observed: float, expected: float, n: int, p: float) -> bool:
    return abs(observed - expected) <= SIGMAS * math.sqrt(p * (1 - p) / n)


def _chi_square(counts: torch.Tensor, expected: torch.Tensor) -> float:
    return float(((counts - expected) ** 2 / expected).sum())


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


# Thresholds that are powers of two read the top bits of each 16-bit number one by one.
@pytest.mark.parametrize("p", [0.5, 0.25, 0.125, 0.0625, 0.05, 0.9])
def test_keep_rate_is_one_minus_p_on_every_lane(p):
    keep = _mask(7 + int(100 * p), p).double()
    assert _within(float(keep.mean()), 1 - p, keep.numel(), p)
    # The eight 16-bit numbers of one Philox call land on columns k % 8 = 0..7 (low halves on
    # 0-3, high halves on 4-7): a chi-square over the lanes, 7 degrees of freedom, must stay
    # within its mean plus 5 standard deviations (7 + 5 * sqrt(14) < 26).
    kept = torch.stack([keep[:, lane::8].sum() for lane in range(8)])
    n = keep[:, 0::8].numel()
    dropped = n - kept
    chi = _chi_square(kept, torch.full((8,), n * (1 - p))) + _chi_square(
        dropped, torch.full((8,), n * p)
    )
    assert chi < 26.0, (p, kept.tolist())


@pytest.mark.parametrize("p", [0.5, 0.05])
def test_neighbours_are_uncorrelated(p):
    keep = _mask(11, p)
    limit = SIGMAS / math.sqrt(keep.numel())
    for lag in (1, 2, 3, 4, 7, 8, 9):  # within one call (1-7), the next call (8), beyond (9)
        assert abs(_corr(keep[:, :-lag], keep[:, lag:])) < limit, ("columns", lag)
    assert abs(_corr(keep[:-1], keep[1:])) < limit, "rows"


def test_masks_of_different_seeds_are_independent():
    # Each layer's forward draws its own seed; a backward regenerates its own forward's mask.
    first, second = _mask(1234, 0.5), _mask(1235, 0.5)
    assert abs(_corr(first, second)) < SIGMAS / math.sqrt(first.numel())
    assert torch.equal(first, _mask(1234, 0.5)), "the same seed must give the same mask"


@pytest.mark.parametrize("block", [16, 64])
def test_the_mask_does_not_depend_on_the_tile_and_k_need_not_be_a_multiple_of_eight(block):
    # The kernels tile the input differently (the keep-mask kernel 32 x 32, the GEMMs their own
    # blocks): a decision depends only on (seed, row, column, K). K = 70: a row's last call
    # covers two columns past the end, which no element reads.
    import triton

    from fastpeft.kernels import dropout as kernels

    seed, shape = torch.tensor([99]), (64, 70)
    want = functional.dropout_keep_mask(seed, shape, 0.3, backend="triton")
    out = torch.empty(shape, dtype=torch.int8)
    grid = (triton.cdiv(shape[0], block), triton.cdiv(shape[1], block))
    kernels.keep_mask_kernel[grid](seed, out, *shape, 0.3, BLOCK_M=block, BLOCK_K=block)
    assert torch.equal(out.bool(), want)
    assert _within(float(want.double().mean()), 0.7, want.numel(), 0.3)
