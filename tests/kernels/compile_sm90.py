"""Compile every Triton launch of fastpeft's host code for an H100 (sm_90), with no GPU needed.

The CPU tier runs the kernels through Triton's interpreter, which accepts programs that the GPU
compiler rejects and never allocates shared memory. This script asks every method of
fastpeft/registry.py that has a `compile_check` to drive its real Triton host code with meta
tensors at realistic shapes, under `launch.recording(launch.HOPPER, ...)`: the host code configures
each launch for sm_90 and records it instead of running it (hopper_launches.py). Each distinct
launch is specialized as Triton's JIT would specialize it on a GPU (ints equal to 1 become
constexprs, 16-divisible ints and aligned pointers get divisibility hints), then compiled TTIR ->
PTX -> cubin for sm_90 with Triton's bundled ptxas, whose log gives registers and spills, and the
code is inspected (tensor-core products and their operand types, fp32 FMAs, SASS or PTX instruction
counts: fastpeft/static/inspect_code.py). The machinery is fastpeft.static.compile's. Every
`*_kernel` of every fastpeft.kernels module must be launched by some method's driver.

Output: one JSON line per distinct compile, then one {"summary": ...} line. Exit status: 0 when
every compile succeeds within the shared-memory limit and every kernel was launched, 1 otherwise,
77 (with a {"skip": reason} line) when Triton's NVIDIA backend cannot compile here at all.

    python tests/kernels/compile_sm90.py            # representative subset (the CPU-tier test)
    python tests/kernels/compile_sm90.py --all      # every dtype combination, rank and activation
    python tests/kernels/compile_sm90.py --only 'ia3 fp32'   # launches whose "method case" match
"""

import os
import sys
from pathlib import Path

# Triton decides at kernel-definition time whether to interpret: drop the flag before anything can
# import triton or fastpeft's kernels.
os.environ.pop("TRITON_INTERPRET", None)
# The fastpeft of this checkout, as under pytest, even where another one is installed (a script's
# sys.path[0] is its folder, not the repository's root).
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

import argparse
import dataclasses
import json
import time

import hopper_launches  # this script's folder is sys.path[0]

from fastpeft.static import compile as compiler
from fastpeft.static.inspect_code import Inspection, disassembler

INSPECTION = [f.name for f in dataclasses.fields(Inspection)]

SKIP_EXIT = 77
ARCH = 90


def _emit(obj) -> None:
    print(json.dumps(obj), flush=True)


def _line(job: compiler.Job, compiled: compiler.Compiled) -> dict:
    """The JSON line of one compile, labelled with the first method and case that launched it."""
    first = job.launches[0]
    line = dict(
        kernel=compiled.kernel,
        method=first.method,
        status=compiled.status,
        shared_kib=compiled.shared_kib,
        registers=compiled.registers,
        spill_bytes=compiled.spill_bytes,
        num_warps=compiled.num_warps,
        num_stages=compiled.num_stages,
        config=compiled.config,
        pointers=compiled.pointers,
        case=first.case,
        launches=len(job.launches),
        seconds=compiled.seconds,
    )
    if compiled.error is not None:
        line["error"] = compiled.error
    line.update((name, getattr(compiled, name)) for name in INSPECTION)
    return line


def _named(records: list[dict], status: str) -> list[str]:
    return [f"{r['kernel']} ({r['method']}: {r['case']})" for r in records if r["status"] == status]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="full sweep (default: the subset)")
    parser.add_argument(
        "--jobs", type=int, default=compiler.default_workers(), help="parallel compiles"
    )
    parser.add_argument(
        "--only", metavar="TEXT", help='compile only launches whose "method case" contains TEXT'
    )
    opts = parser.parse_args(argv)

    problem = compiler.backend_problem(ARCH)
    if problem is not None:
        _emit({"skip": problem})
        return SKIP_EXIT

    t0 = time.perf_counter()
    launches = hopper_launches.record_all(opts.all, opts.only)
    upcast = [x for x in launches if x.kwargs.get("UPCAST")]
    if upcast:  # the host took its interpreter path: the compiles would not be the GPU's
        where = f"{upcast[0].method} {upcast[0].case}"
        _emit({"error": f"launch with UPCAST=True (interpreter config) in {where!r}"})
        return 1
    jobs = compiler.distinct(launches, ARCH)

    # No cache_dir: a fresh temporary cache, so every kernel really compiles.
    records = []
    for job, compiled in zip(jobs, compiler.iter_compiled(jobs, ARCH, opts.jobs), strict=True):
        records.append(_line(job, compiled))
        _emit(records[-1])

    launched = {r["kernel"] for r in records}
    missing = {} if opts.only else hopper_launches.not_launched(launches)
    ok = [r for r in records if r["status"] == "ok"]
    tool = disassembler()
    summary = dict(
        compiles=len(records),
        launches=len(launches),
        methods=sorted({x.method for x in launches}),
        failed=_named(records, "fail"),
        over_shared_limit=_named(records, "smem"),
        not_launched=missing,
        kernels=sorted(launched),
        max_shared_kib=max((r["shared_kib"] for r in ok), default=None),
        max_spill_bytes=max((r["spill_bytes"] or 0 for r in ok), default=None),
        disassembler=tool[1] if tool else None,
        seconds=round(time.perf_counter() - t0, 1),
        subset="all" if opts.all else "default",
        jobs=opts.jobs,
    )
    _emit({"summary": summary})
    bad = summary["failed"] or summary["over_shared_limit"] or missing
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
