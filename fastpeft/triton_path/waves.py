"""How a launch fills the GPU: the CTAs of one wave, and how a reduction over M (or K) splits into
fixed-order partial sums so that a launch with few output tiles still fills one. The wave is
counted from the compiled kernel's registers and shared memory where the host can ask (a GPU's
Triton compile; the static suite's compile for its arch), else estimated.

Shared by the hosts whose skinny reductions would otherwise run a few programs per SM (LoRA's
down-projection and dA / dB, the adapters' weight gradients).
"""

import math
import warnings
from collections.abc import Callable

import torch
import triton

from . import launch
from .launch import Target

# An SM holds at most 2048 threads: a grid of SMs * 2048 / (32 * num_warps) CTAs fills at
# least one wave whatever else (registers, shared memory) limits how many are resident.
_THREADS_PER_SM = 2048
_SHARED_PER_SM = 228 * 1024  # sm_80 has less (164 KiB): fewer resident CTAs, never more
REGISTERS_PER_SM = 65536
REGISTER_UNIT = 256  # registers are allocated per warp, in units of 256
CTA_RESERVED_SHARED = 1024  # shared memory the system keeps per resident CTA
MAX_CTAS_PER_SM = 32
SHARED_PER_SM = {90: 228 * 1024, 80: 164 * 1024}  # bytes an SM has, by SM version

# A launch to ask about: (kernel, key, build). `key` names its compile (the constexprs and the
# operand dtypes); `build()` returns its (args, kwargs), and may allocate, so it runs once per key.
Probe = tuple[object, tuple, Callable[[], tuple[tuple, dict]]]

_resident_cache: dict[tuple, int | None] = {}


def resident(
    registers: int,
    shared_bytes: int,
    num_warps: int,
    *,
    shared_per_sm: int = _SHARED_PER_SM,
    registers_per_sm: int = REGISTERS_PER_SM,
    threads_per_sm: int = _THREADS_PER_SM,
    max_ctas: int = MAX_CTAS_PER_SM,
) -> int:
    """CTAs of a compiled kernel one SM holds, limited by threads, registers (allocated per warp
    in units of 256) and shared memory (plus the system's 1 KiB per CTA). The static model uses
    the same count (fastpeft/static/model.py)."""
    threads = 32 * num_warps
    per_warp = math.ceil(max(registers, 1) * 32 / REGISTER_UNIT) * REGISTER_UNIT
    by_registers = registers_per_sm // (per_warp * num_warps)
    by_shared = shared_per_sm // (shared_bytes + CTA_RESERVED_SHARED)
    return max(0, min(max_ctas, threads_per_sm // threads, by_registers, by_shared))


def resident_ctas(target: Target, probe: Probe) -> int | None:
    """CTAs per SM that the probe's launch holds once compiled for `target`, or None where that is
    not known (the interpreter; a recording without a `resident` callback; a Triton whose compile
    does not say). On a GPU, Triton compiles the launch without running it (the compile its real
    launches then reuse) and the driver reports its registers; the answer is kept per key, so the
    choice it feeds is the same on every call. Inside `launch.recording` the recording's callback
    answers (the static suite compiles the launch for the target arch)."""
    if target.interpreter:
        return None
    kernel, key, build = probe
    recording, callback = launch.recording_state()
    if recording:
        return None if callback is None else callback(kernel, *build())
    full_key = (kernel, target, key)
    if full_key not in _resident_cache:
        _resident_cache[full_key] = _compiled_resident(target, kernel, *build())
    return _resident_cache[full_key]


def _compiled_resident(target: Target, kernel, args: tuple, kwargs: dict) -> int | None:
    try:
        compiled = kernel.warmup(*args, grid=(1,), **kwargs)
        if compiled is None:  # a compile hook took the compile over: nothing to read
            return None
        compiled._init_handles()  # loads the binary; the driver's register count comes with it
        registers, shared = compiled.n_regs, compiled.metadata.shared
        num_warps = compiled.metadata.num_warps
    except (AttributeError, TypeError) as exc:  # a Triton whose compile object says otherwise
        warnings.warn(
            f"fastpeft: cannot read {getattr(kernel, '__name__', kernel)}'s registers from this "
            f"Triton ({exc}); its reduction splits use the thread-based estimate",
            stacklevel=3,
        )
        return None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    shared_per_sm = getattr(props, "shared_memory_per_multiprocessor", None)
    return resident(
        registers,
        shared,
        num_warps,
        shared_per_sm=shared_per_sm or SHARED_PER_SM.get(target.arch, _SHARED_PER_SM),
    )


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
    probe: Probe | None = None,
):
    """(blocks per split, splits) of a reduction over `blocks` blocks, for a launch with
    `programs` programs per split whose pipeline stages load `stage_bytes` each. At least
    enough splits to fill a wave; among up to twice that many, the count whose last wave is
    fullest (the fewer splits, so fewer partials to write and sum, on a tie); never an empty
    split. The interpreter takes two splits, so the CPU tests run the partial-sum paths too.

    The wave: with a `probe` (the launch itself, as `resident_ctas` takes it), the SMs times the
    CTAs its compile lets one SM hold, exactly. Without one, or where that is not known, an
    estimate by threads and shared memory that errs high (registers only lower it), so the grid
    errs towards more than a wave. `traffic` = (bytes the launch streams, bytes of one split's
    fp32 partial) then caps the splits so that writing and summing the partials costs at most
    half the streamed bytes (wide partials, three adapters' t at rank 128, would otherwise cost
    more than the wave they fill is worth); an exact wave is never capped below one wave."""
    if blocks <= 1:
        return max(blocks, 1), 1
    cap = blocks if traffic is None else max(1, traffic[0] // (4 * traffic[1]))
    if target.interpreter:
        want, wave = 2, 0
    else:
        per_sm = resident_ctas(target, probe) if probe is not None else None
        if per_sm:
            wave = target.sm_count * per_sm
            cap = max(cap, triton.cdiv(wave, programs))  # never under an exact wave
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
