"""A read-bandwidth probe of the L2 cache, for the device's measured ceilings (`measured_peaks`).

The adapters' tile walks re-read their operands from L2 many times over (kernels/adapter.py
REREADS: up to 8x their DRAM bytes at H=256), traffic the static model cannot cost until this
ceiling is measured. The probe reads a buffer small enough to stay in L2 after the first round,
with L1 bypassed (".cg" loads), so every later round streams from L2 to the SMs. A bench probe,
not a method's kernel: it lives here, not in kernels/, which the compile checks expect every
registered method to launch.
"""

import torch
import triton
import triton.language as tl

from ..triton_path.launch import launch, target_for

_BLOCK = 2048  # fp32 elements a program loads a step: 16 a thread on 4 warps, four 16-byte loads
# Eight 4-warp programs an SM (half its thread slots), each with four 16-byte loads a thread in
# flight: about 64 KiB in flight an SM, several times L2's latency-bandwidth product.
_PROGRAMS_PER_SM = 8


@triton.jit
def l2_read_kernel(buf_ptr, out_ptr, numel, rounds, BLOCK: tl.constexpr):
    # Grid: any number of programs. Each round, program pid reads tiles pid, pid + programs, ...
    # shifted by the round, so no SM re-reads one tile round after round (an L1 could serve it);
    # each program's sum is stored, so no load is dead code.
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    tiles = tl.cdiv(numel, BLOCK)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for r in range(0, rounds):
        for t in range(pid, tiles, programs):
            tile = (t + r) % tiles
            offs = tile.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
            acc += tl.load(buf_ptr + offs, mask=offs < numel, other=0.0, cache_modifier=".cg")
    tl.store(out_ptr + pid, tl.sum(acc, axis=0))


def l2_read(buf: torch.Tensor, rounds: int, programs: int | None = None) -> torch.Tensor:
    """Reads the contiguous fp32 `buf` `rounds` times over and returns each program's sum:
    together they equal rounds · buf.sum(), so every element of every round was read. `programs`
    defaults to eight per SM (three on the interpreter, with small tiles)."""
    if buf.dtype != torch.float32 or not buf.is_contiguous():
        raise ValueError(f"buf must be a contiguous float32 tensor, got {buf.dtype}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    target = target_for(buf.device)
    if programs is None:
        programs = 3 if target.interpreter else _PROGRAMS_PER_SM * target.sm_count
    out = torch.empty(programs, device=buf.device, dtype=torch.float32)
    block = 64 if target.interpreter else _BLOCK
    launch(l2_read_kernel, (programs,), buf, out, buf.numel(), rounds, BLOCK=block, num_warps=4)
    return out
