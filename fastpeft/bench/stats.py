"""The statistics every benchmark row reports: medians with a p20–p80 spread over repetitions,
paired ratios against a baseline, the noisy flag and geometric means across rows.

Providers are timed in the same repetitions (interleaved), so repetition i of provider A and
repetition i of the baseline ran back to back: their ratio cancels the slow drifts of a shared
machine, and the spread of those per-repetition ratios is what a speedup is reported with.
"""

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# A row is "noisy" when its p80/p20 spread exceeds this (25%): between the 20th and 80th
# percentile of its repetitions the figure moves by more than a quarter, so one run of the
# benchmark says little about the next.
NOISY_SPREAD = 1.25


@dataclass(frozen=True)
class Spread:
    """Median with the 20th and 80th percentiles of a set of samples."""

    median: float
    p20: float
    p80: float

    @property
    def width(self) -> float:
        """p80 / p20 (1.0 when every sample agrees)."""
        return self.p80 / self.p20 if self.p20 > 0 else math.inf

    @property
    def noisy(self) -> bool:
        return self.width > NOISY_SPREAD


def quantile(samples: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default)."""
    if not samples:
        raise ValueError("quantile of no samples")
    ordered = sorted(samples)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def spread(samples: Sequence[float]) -> Spread:
    return Spread(statistics.median(samples), quantile(samples, 0.2), quantile(samples, 0.8))


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """numerator[i] / denominator[i] for every repetition i (both timed in repetition i)."""
    if len(numerator) != len(denominator):
        raise ValueError(f"unpaired samples: {len(numerator)} vs {len(denominator)}")
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def geomean_spread(per_row_ratios: Sequence[Sequence[float]]) -> Spread:
    """Spread over repetitions of the geometric mean across rows: repetition i's geometric mean
    of every row's i-th ratio. Rows with fewer repetitions than the others are cut to the
    shortest, so every repetition's mean covers every row."""
    reps = min(len(r) for r in per_row_ratios)
    return spread([geomean([r[i] for r in per_row_ratios]) for i in range(reps)])
