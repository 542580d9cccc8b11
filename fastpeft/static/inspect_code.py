"""What a compiled kernel's code does, read from its PTX, its SASS and ptxas's log.

Pure functions over text and bytes (the disassembler aside), so each is testable on a snippet:

- tensor-core use: `wgmma.mma_async` (Hopper's warpgroup MMA) and `mma.sync` (Ampere's warp MMA)
  in the PTX, with `ldmatrix` (shared -> registers for `mma.sync`), and the operand types of those
  products (".bf16", ".tf32", ...), so fp32 operands' precision is visible; beside them the count of
  fp32 FMAs (`fma.rn.f32`), which is where a product goes when it is not on tensor cores (an "ieee"
  fp32 `tl.dot`);
- the size of the instruction stream: SASS instructions (the cubin disassembled by nvdisasm or
  cuobjdump, found in Triton's NVIDIA backend or on PATH), else PTX instructions, saying which;
- registers and spills from ptxas's log (`ptxas -v`, printed by Triton on a real compile).

Every count is static: an instruction in a loop body counts once, however often it runs.
"""

import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# PTX's MMA operand types (the shape's neighbours are layouts, accumulator types and modifiers).
_MMA_TYPES = frozenset("f16 bf16 tf32 f32 f64 e4m3 e5m2 e3m2 e2m3 e2m1 s8 u8 s4 u4 b1".split())
_SHAPE = re.compile(r"m\d+n\d+k\d+")
_PTX_OPCODE = re.compile(r"^(?:@!?%\w+\s+)?([a-z][a-z0-9_]*(?:\.[A-Za-z0-9_:]+)*)(?=[\s;]|$)")
_SASS_OPCODE = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P(?:T|\d+)\s+)?([A-Z][A-Z0-9_]*)")
_FMA_F32 = frozenset({"fma.rn.f32", "fma.rn.ftz.f32", "fma.rn.sat.f32", "fma.rn.ftz.sat.f32"})
SASS_TENSOR_OPCODES = frozenset({"HGMMA", "HMMA", "IMMA", "QGMMA", "IGMMA", "BGMMA", "DMMA"})


@dataclass(kw_only=True)
class Inspection:
    """A kernel's code, counted: tensor-core products, fp32 FMAs and instructions (all static
    counts; None where the code was not read, e.g. a failed compile)."""

    wgmma: int | None = None  # wgmma.mma_async in the PTX (sm_90's warpgroup MMA)
    mma_sync: int | None = None  # mma.sync in the PTX (sm_80's warp MMA)
    ldmatrix: int | None = None
    tensor_core_ops: int | None = None  # wgmma + mma_sync
    tensor_core_types: list[str] = field(default_factory=list)  # operand types, e.g. ["bf16"]
    fma_count: int | None = None  # fp32 FMAs (fma.rn.f32) in the PTX
    ptx_instructions: int | None = None
    sass_instructions: int | None = None  # None without a disassembler
    instructions: int | None = None  # SASS where it was read, else PTX
    instruction_source: str | None = None  # "sass" or "ptx"
    # SASS instructions inside loops (the main loop's body runs once per step, the rest once per
    # program): None where no SASS was read.
    loop_instructions: int | None = None


# ------------------------------------------------------------------------------------------------
# PTX
# ------------------------------------------------------------------------------------------------


def ptx_opcodes(ptx: str) -> list[str]:
    """The opcode (with its modifiers, e.g. "fma.rn.f32") of every PTX instruction, in order.
    Directives (".reg", ".loc"), labels, braces, comments and continuation lines are skipped."""
    out = []
    for line in ptx.splitlines():
        line = line.split("//", 1)[0].strip()
        match = _PTX_OPCODE.match(line)
        if match and not line.endswith(":"):
            out.append(match.group(1))
    return out


def mma_operand_types(opcode: str) -> tuple[str, ...]:
    """The A and B operand types of a `wgmma.mma_async` or `mma.sync` opcode: ("bf16", "bf16")
    for "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16" (types follow the shape as
    D, A, B[, C])."""
    parts = opcode.split(".")
    shape = next((i for i, p in enumerate(parts) if _SHAPE.fullmatch(p)), None)
    if shape is None:
        return ()
    types = [p for p in parts[shape + 1 :] if p in _MMA_TYPES]
    return tuple(types[1:3])


def ptx_counts(ptx: str) -> dict:
    """Tensor-core products, their operand types, fp32 FMAs and the instruction count of a PTX
    module (the fields of `Inspection` that the PTX gives)."""
    opcodes = ptx_opcodes(ptx)
    wgmma = [op for op in opcodes if op.startswith("wgmma.mma_async")]
    mma = [op for op in opcodes if op.startswith("mma.sync")]
    types = sorted({t for op in wgmma + mma for t in mma_operand_types(op)})
    return dict(
        wgmma=len(wgmma),
        mma_sync=len(mma),
        ldmatrix=sum(op.startswith("ldmatrix") for op in opcodes),
        tensor_core_ops=len(wgmma) + len(mma),
        tensor_core_types=types,
        fma_count=sum(op in _FMA_F32 for op in opcodes),
        ptx_instructions=len(opcodes),
    )


# ------------------------------------------------------------------------------------------------
# SASS
# ------------------------------------------------------------------------------------------------


def sass_opcodes(sass: str) -> list[str]:
    """The base opcode ("HGMMA", "FFMA", ...) of every SASS instruction in nvdisasm's or
    cuobjdump -sass's listing, NOPs (alignment padding) left out."""
    out = []
    for line in sass.splitlines():
        match = _SASS_OPCODE.match(line)
        if match and match.group(1) != "NOP":
            out.append(match.group(1))
    return out


_SASS_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_SASS_BRANCH = re.compile(r"\bBRA\s+`?\(?(\.L_x_\d+)\)?")


def sass_loop_instructions(sass: str) -> int:
    """SASS instructions (NOPs left out) inside loops: the spans from a label to a later branch
    back to it, overlapping spans merged (nested loops counted once), a branch to itself (the
    trap loop after EXIT) left out."""
    labels: dict[str, int] = {}  # label -> index of the next instruction
    spans = []
    index = 0
    for line in sass.splitlines():
        label = _SASS_LABEL.match(line)
        if label:
            labels[label.group(1)] = index
            continue
        opcode = _SASS_OPCODE.match(line)
        if not opcode or opcode.group(1) == "NOP":
            continue
        branch = _SASS_BRANCH.search(line)
        if branch and branch.group(1) in labels and labels[branch.group(1)] < index:
            spans.append((labels[branch.group(1)], index))
        index += 1
    covered = 0
    end = -1
    for start, stop in sorted(spans):
        if stop > end:
            covered += stop - max(start, end + 1) + 1
            end = stop
    return covered


def sass_histogram(sass: str, opcodes: Iterable[str] | None = None) -> dict[str, int]:
    """{opcode: count} of a SASS listing, for `opcodes` only when given."""
    counts = Counter(sass_opcodes(sass))
    return dict(counts) if opcodes is None else {op: counts.get(op, 0) for op in opcodes}


def _triton_tool(name: str) -> str | None:
    try:
        from triton import knobs

        path = getattr(knobs.nvidia, name).path  # honours TRITON_<NAME>_PATH
    except Exception:
        return None
    return path if path and os.access(path, os.X_OK) else None


@functools.cache
def disassembler() -> tuple[str, str] | None:
    """(tool, path) of the SASS disassembler used: nvdisasm, else cuobjdump, from Triton's NVIDIA
    backend (triton/backends/nvidia/bin), else from PATH; None when neither is found."""
    for tool in ("nvdisasm", "cuobjdump"):
        path = _triton_tool(tool) or shutil.which(tool)
        if path:
            return tool, path
    return None


def disassemble(cubin: bytes, timeout: float = 120) -> str | None:
    """The SASS listing of a cubin, or None without a disassembler."""
    found = disassembler()
    if found is None:
        return None
    tool, path = found
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        # -ndf: no branch-stack dataflow analysis (only labels branch targets; it can fail)
        args = [path, "-c", "-ndf", f.name] if tool == "nvdisasm" else [path, "-sass", f.name]
        return subprocess.run(
            args, check=True, capture_output=True, text=True, timeout=timeout
        ).stdout


# ------------------------------------------------------------------------------------------------
# ptxas's log, and all of it together
# ------------------------------------------------------------------------------------------------


def ptxas_usage(log: str) -> tuple[int | None, int | None]:
    """(registers, spill store bytes) from ptxas -v's log; None for what it does not say."""
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    return (
        int(regs.group(1)) if regs else None,
        int(spills.group(1)) if spills else None,
    )


def inspect(asm: Mapping, sass: str | None = None) -> Inspection:
    """The Inspection of a compiled kernel from its `.asm` (Triton's CompiledKernel: "ptx" text,
    "cubin" bytes). The SASS is `sass` when given, else the cubin disassembled when a tool is
    found; the instruction count falls back to the PTX's."""
    counts = ptx_counts(asm["ptx"])
    if sass is None and asm.get("cubin"):
        try:
            sass = disassemble(asm["cubin"])
        except (OSError, subprocess.SubprocessError):
            sass = None  # counted from the PTX instead, and said so
    if sass is not None:
        n_sass = len(sass_opcodes(sass))
        return Inspection(
            **counts, sass_instructions=n_sass, instructions=n_sass, instruction_source="sass",
            loop_instructions=sass_loop_instructions(sass),
        )  # fmt: skip
    return Inspection(**counts, instructions=counts["ptx_instructions"], instruction_source="ptx")
