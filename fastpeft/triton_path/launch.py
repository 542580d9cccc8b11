"""The target Triton launches are configured for, and the one place they are launched.

Every host module asks `target_for(device)` which machine its launches will run on (a CUDA
architecture, or the CPU interpreter) and picks its block configurations as a function of that
target and the dtypes, then launches through `launch`. `recording(target, record)` makes the same
host code configure for another target and hand its launches to `record` instead of running them:
that is how the sm_90 compile check sees, with meta tensors and no GPU, exactly the launches a
Hopper GPU would get.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import env

# SMs of the GPUs each architecture is modelled on (H100/H200 SXM, A100 SXM), for targets built
# without a device (the static suite and the compile check).
_SMS = {90: 132, 80: 108}


@dataclass(frozen=True)
class Target:
    """Where launches run: kind "cuda" with its SM version (90 for Hopper) and SM count, or
    "interpreter"."""

    kind: str
    arch: int = 0
    sms: int = 0  # 0: the architecture's usual count

    @property
    def interpreter(self) -> bool:
        return self.kind == "interpreter"

    @property
    def sm_count(self) -> int:
        return self.sms or _SMS.get(self.arch, 132)


INTERPRETER = Target("interpreter")
HOPPER = Target("cuda", 90)

_forced: Target | None = None
_recorder: Callable | None = None
_resident: Callable | None = None  # the recording's compile oracle (see `recording`)
_targets: dict[int, Target] = {}  # device index -> its target


def target_for(device: torch.device) -> Target:
    """The target launches for tensors on `device` are configured for."""
    if _forced is not None:
        return _forced
    if device.type != "cuda":
        return INTERPRETER
    index = device.index if device.index is not None else torch.cuda.current_device()
    target = _targets.get(index)
    if target is None:
        props = torch.cuda.get_device_properties(index)
        arch = 10 * props.major + props.minor
        target = _targets[index] = Target("cuda", arch, props.multi_processor_count)
    return target


def dot_flags(target: Target) -> dict:
    """The constexprs every `mma` takes (kernels/_common.py): UPCAST on the interpreter (its
    16-bit dot is unreliable) and the fp32 dot precision.

    fp32 products run on the tensor cores either way: plain TF32 where torch's matmul allows it
    (`torch.backends.cuda.matmul.allow_tf32`), else 3xTF32 ("tf32x3": each operand split into a
    TF32 high part and a TF32 remainder, three products summed), which keeps about 21 of fp32's
    24 mantissa bits per product at a third of TF32's rate, seven times the FMA units' (the error
    against fp64 is checked in tests/kernels/test_tf32x3.py). The interpreter computes in numpy
    fp32 ("ieee")."""
    if target.interpreter:
        return dict(UPCAST=True, PRECISION="ieee")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    return dict(UPCAST=False, PRECISION="tf32" if tf32 else "tf32x3")


def rank_term_precision(flags: dict, out_dtype: torch.dtype) -> str:
    """The dot precision of an fp32 rank-r term added into an fp32 accumulator that is then rounded
    to `out_dtype` (LoRA's s · t Bᵀ into y, u A into dx): plain TF32 where that output is bf16 and
    FASTPEFT_RANK_TERM_TF32 is on, else `flags`' PRECISION.

    Why TF32 is enough there: PEFT itself rounds the base product to bf16, adds its fp32 rank term
    and rounds the sum to bf16 again (dx likewise: two bf16 gradients summed in bf16). TF32's
    relative error per product (about 2^-10) is a quarter of bf16's half-ulp (2^-9), and the fused
    kernel rounds once, so its error against fp64 stays below PEFT's (measured in
    tests/kernels/test_tf32x3.py: mean 0.25-0.43 ulp against PEFT's 0.36-1.44). Not for fp16
    outputs (their 10 mantissa bits match TF32's: the error would pass PEFT's), nor for fp32
    outputs or the fp32 gradients dA and dB, which keep 3xTF32. It saves two of the three TF32
    products of each such term: four of the fourteen TF32 passes of Paper A's rank-128 terms."""
    if flags["PRECISION"] == "tf32x3" and out_dtype == torch.bfloat16 and env.rank_term_tf32():
        return "tf32"
    return flags["PRECISION"]


def launch(kernel, grid, *args, **kwargs) -> None:
    """Launch `kernel` over `grid`, or hand it to the recorder inside `recording`."""
    if _recorder is not None:
        _recorder(kernel, grid, args, kwargs)
        return
    kernel[grid](*args, **kwargs)


@contextlib.contextmanager
def recording(target: Target, record: Callable, resident: Callable | None = None):
    """Configure launches for `target` and pass each to `record(kernel, grid, args, kwargs)`
    instead of running it (host code then works on meta tensors). `resident(kernel, args,
    kwargs)`, where given, answers what a GPU's compile would: the CTAs per SM of that launch
    (waves.resident_ctas); without it host code falls back to its estimate."""
    global _forced, _recorder, _resident
    saved = _forced, _recorder, _resident
    _forced, _recorder, _resident = target, record, resident
    try:
        yield
    finally:
        _forced, _recorder, _resident = saved


def recording_state() -> tuple[bool, Callable | None]:
    """(whether launches are being recorded, the recording's `resident` callback or None)."""
    return _recorder is not None, _resident


@contextlib.contextmanager
def allow_tf32(enabled: bool):
    """torch's TF32 switch for matmuls set to `enabled` while host code configures launches (the
    dot precision follows it: `dot_flags`)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
