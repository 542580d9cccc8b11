"""How a launch fills the GPU: the CTAs of one wave, and how a reduction over M (or K) splits into
fixed-order partial sums so that a launch with few output tiles still fills one.

Shared by the hosts whose skinny reductions would otherwise run a few programs per SM (LoRA's
down-projection and dA / dB, the adapters' weight gradients).
"""

import math

import triton

from .launch import Target

# An SM holds at most 2048 threads: a grid of SMs * 2048 / (32 * num_warps) CTAs fills at
# least one wave whatever else (registers, shared memory) limits how many are resident.
_THREADS_PER_SM = 2048
_SHARED_PER_SM = 228 * 1024  # sm_80 has less (164 KiB): fewer resident CTAs, never more


def wave_ctas(target: Target, num_warps: int, shared_bytes: int = 0) -> int:
    """CTAs of `num_warps` warps using at least `shared_bytes` of shared memory that fill one
    wave of `target` (0 on the interpreter): the SMs times the CTAs one SM holds by its threads
    and shared memory. Registers can only make that fewer, and the wave shorter, so a grid of
    this size fills at least one wave whatever the compile's register count."""
    if target.interpreter:
        return 0
    by_threads = _THREADS_PER_SM // (32 * num_warps)
    by_shared = _SHARED_PER_SM // (shared_bytes + 1024) if shared_bytes else by_threads
    return target.sm_count * max(1, min(by_threads, by_shared))


def split(
    target: Target,
    blocks: int,
    programs: int,
    skinny: dict,
    stage_bytes: int,
    traffic: tuple[int, int] | None = None,
):
    """(blocks per split, splits) of a reduction over `blocks` blocks, for a launch with
    `programs` programs per split whose pipeline stages load `stage_bytes` each. At least
    enough splits to fill a wave; among up to twice that many, the count whose last wave is
    fullest (the fewer splits, so fewer partials to write and sum, on a tie); never an empty
    split. `traffic` = (bytes the launch streams, bytes of one split's fp32 partial) caps the
    splits so that writing and summing the partials costs at most half the streamed bytes: the
    wave estimate (by threads) errs high, and wide partials (three adapters' t, rank 128) would
    otherwise cost more than the wave they fill is worth. The interpreter takes two splits, so
    the CPU tests run the partial-sum paths too."""
    if blocks <= 1:
        return max(blocks, 1), 1
    cap = blocks if traffic is None else max(1, traffic[0] // (4 * traffic[1]))
    if target.interpreter:
        want, wave = 2, 0
    else:
        # At least num_stages - 1 stages are resident (an estimate that errs low, so the CTAs
        # an SM holds err high and the grid errs towards more than a wave).
        shared = max(skinny.get("num_stages", 1) - 1, 1) * stage_bytes
        wave = wave_ctas(target, skinny.get("num_warps", 4), shared)
        want = min(triton.cdiv(wave, programs), cap)
    if want <= 1:
        return blocks, 1
    # Balanced splits: `per` blocks each, from the most that still gives `want` splits down.
    most = max(1, (blocks - 1) // (want - 1))
    counts = sorted({triton.cdiv(blocks, per) for per in range(max(1, most // 2), most + 1)})
    counts = [n for n in counts if n <= cap] or [want]
    best = (
        max(counts, key=lambda n: (_last_wave_fill(programs * n, wave), -n)) if wave else counts[0]
    )
    per = triton.cdiv(blocks, best)
    return per, triton.cdiv(blocks, per)


def _last_wave_fill(ctas: int, wave: int) -> float:
    """waves / ceil(waves): 1.0 when the grid is a whole number of waves."""
    waves = ctas / wave
    return waves / math.ceil(waves)
