"""Compile every Triton launch of fastpeft's host code for an H100 (sm_90), with no GPU needed.

The CPU tier runs the kernels through Triton's interpreter, which accepts programs that the GPU
compiler rejects and never allocates shared memory. This script asks every method of
fastpeft/registry.py that has a `compile_check` to drive its real Triton host code with meta
tensors at realistic shapes, under `launch.recording(launch.HOPPER, ...)`: the host code configures
each launch for sm_90 and records it instead of running it (hopper_launches.py). Each distinct
launch is specialized as Triton's JIT would specialize it on a GPU (ints equal to 1 become
constexprs, 16-divisible ints and aligned pointers get divisibility hints), then compiled TTIR ->
PTX -> cubin for sm_90 with Triton's bundled ptxas, whose log gives registers and spills. Every
`*_kernel` of every fastpeft.kernels module must be launched by some method's driver.

Output: one JSON line per distinct compile, then one {"summary": ...} line. Exit status: 0 when
every compile succeeds within the shared-memory limit and every kernel was launched, 1 otherwise,
77 (with a {"skip": reason} line) when Triton's NVIDIA backend cannot compile here at all.

    python tests/kernels/compile_sm90.py            # representative subset (the CPU-tier test)
    python tests/kernels/compile_sm90.py --all      # every dtype combination, rank and activation
    python tests/kernels/compile_sm90.py --only 'ia3 fp32'   # launches whose "method case" match
"""

import os

# Triton decides at kernel-definition time whether to interpret: drop the flag before anything can
# import triton or fastpeft's kernels.
os.environ.pop("TRITON_INTERPRET", None)

import argparse
import contextlib
import functools
import io
import json
import multiprocessing
import re
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import hopper_launches  # this script's folder is sys.path[0]

SKIP_EXIT = 77
SHARED_LIMIT_KIB = 227  # H100: at most 227 KiB of shared memory per block (opt-in maximum)
ARCH = 90

warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION is unset")


def _emit(obj) -> None:
    print(json.dumps(obj), flush=True)


# ------------------------------------------------------------------------------------------------
# Whether Triton can compile for sm_90 here
# ------------------------------------------------------------------------------------------------


def backend_problem() -> str | None:
    """None when Triton's NVIDIA backend can compile for sm_90 here, else why not."""
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import make_backend

        make_backend(GPUTarget("cuda", ARCH, 32))
    except Exception as exc:
        return f"triton's NVIDIA backend does not load: {type(exc).__name__}: {exc}"
    try:
        from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: F401

        JITFunction._pack_args  # noqa: B018
    except (ImportError, AttributeError) as exc:
        return (
            f"triton {triton.__version__} lacks the JIT specialization helpers this check mirrors "
            f"(create_function_from_signature, JITFunction._pack_args): {exc}"
        )
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        ptxas = get_ptxas(ARCH).path
    except Exception as exc:
        return f"triton's ptxas for sm_{ARCH} is not found: {type(exc).__name__}: {exc}"
    try:
        subprocess.run([ptxas, "--version"], check=True, capture_output=True, timeout=120)
    except Exception as exc:
        return f"triton's ptxas ({ptxas}) does not run here: {type(exc).__name__}: {exc}"
    return None


# ------------------------------------------------------------------------------------------------
# Specializing and compiling
# ------------------------------------------------------------------------------------------------


def _target():
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", ARCH, 32)


@functools.cache
def _backend():
    from triton.compiler import make_backend

    return make_backend(_target())


@functools.cache
def _binder(fn):
    from triton.runtime.jit import create_function_from_signature

    return create_function_from_signature(fn.signature, fn.params, _backend())


def specialize(fn, args, kwargs):
    """(signature, constexprs, attrs, options) exactly as JITFunction.run builds them on a GPU."""
    from triton import knobs

    kwargs = dict(kwargs)
    kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
    for name in ("instrumentation_mode", "fpsan_homomorphic_casts"):
        if hasattr(knobs.compilation, name):
            kwargs[name] = getattr(knobs.compilation, name)
    bound, specialization, options = _binder(fn)(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        _backend(), kwargs, bound, specialization, options
    )
    return signature, constexprs, attrs, options


def _jsonable(value):
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)


def make_jobs(launches: list[hopper_launches.Launch]) -> list[dict]:
    """One job per distinct (kernel, signature, constexprs, attrs, options), labelled with the
    first method and case that launched it."""
    jobs, index = [], {}
    for method, case, fn, _grid, args, kwargs in launches:
        signature, constexprs, attrs, options = specialize(fn, args, kwargs)
        key = (
            fn.__module__,
            fn.__name__,
            tuple(signature.items()),
            tuple(sorted(constexprs.items())),
            tuple(sorted((k, repr(v)) for k, v in attrs.items())),
            tuple(sorted((k, repr(v)) for k, v in options.__dict__.items())),
        )
        if key in index:
            jobs[index[key]]["launches"] += 1
            continue
        declared = {p.name for p in fn.params if p.is_constexpr}
        names = list(signature)
        index[key] = len(jobs)
        jobs.append(
            dict(
                fn=fn,
                signature=signature,
                constexprs=constexprs,
                attrs=attrs,
                options=options.__dict__,
                method=method,
                case=case,
                launches=1,
                config={
                    names[path[0]]: _jsonable(value)
                    for path, value in constexprs.items()
                    if names[path[0]] in declared
                },
                pointers={
                    name.removesuffix("_ptr"): ty[1:]
                    for name, ty in signature.items()
                    if isinstance(ty, str) and ty.startswith("*")
                },
            )
        )
    return jobs


_JOBS: list[dict] = []  # read by forked workers


def _record(job: dict, **fields) -> dict:
    record = dict(
        kernel=job["fn"].__name__,
        method=job["method"],
        status="ok",
        shared_kib=None,
        registers=None,
        spill_bytes=None,
        num_warps=job["options"]["num_warps"],
        num_stages=job["options"]["num_stages"],
        config=job["config"],
        pointers=job["pointers"],
        case=job["case"],
        launches=job["launches"],
    )
    record.update(fields)
    return record


def compile_job(i: int) -> dict:
    """Compile job i for sm_90: its record, with shared memory, registers and spills."""
    import triton
    from triton.compiler import ASTSource

    job = _JOBS[i]
    record = _record(job)
    src = ASTSource(job["fn"], job["signature"], job["constexprs"], job["attrs"])
    log = io.StringIO()  # triton prints the ptxas log (and, on failure, the whole PTX) to stdout
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            kernel = triton.compile(src, target=_target(), options=job["options"])
    except Exception as exc:
        record["status"] = "fail"
        message = f"{type(exc).__name__}: {exc}"
        record["error"] = (
            message if len(message) <= 6000 else f"{message[:3000]} [...] {message[-3000:]}"
        )
        record["seconds"] = round(time.perf_counter() - t0, 2)
        return record
    record["seconds"] = round(time.perf_counter() - t0, 2)
    shared = kernel.metadata.shared
    record["shared_kib"] = round(shared / 1024, 1)
    if shared > SHARED_LIMIT_KIB * 1024:
        record["status"] = "smem"
        record["error"] = f"{shared} bytes of shared memory > {SHARED_LIMIT_KIB} KiB on sm_{ARCH}"
    text = log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores", text)
    if regs:
        record["registers"] = int(regs.group(1))
    if spills:
        record["spill_bytes"] = int(spills.group(1))
    return record


def _crashed(i: int, exc: BaseException) -> dict:
    error = f"the compiler killed its process ({type(exc).__name__}: {exc})"
    return _record(_JOBS[i], status="fail", error=error)


def compile_all(workers: int):
    """compile_job's records in job order, `workers` compiles at a time in forked processes.

    A compile that kills its process (an LLVM or MLIR abort) breaks the pool; the jobs left are
    then compiled one process each, so the culprit is named instead of hanging the run.
    """
    if workers <= 1 or len(_JOBS) <= 1:
        yield from map(compile_job, range(len(_JOBS)))
        return
    fork = multiprocessing.get_context("fork")
    done = 0
    try:
        with ProcessPoolExecutor(min(workers, len(_JOBS)), mp_context=fork) as pool:
            for record in pool.map(compile_job, range(len(_JOBS))):
                done += 1
                yield record
        return
    except BrokenProcessPool:
        pass
    for i in range(done, len(_JOBS)):
        try:
            with ProcessPoolExecutor(1, mp_context=fork) as pool:
                yield pool.submit(compile_job, i).result()
        except BrokenProcessPool as exc:
            yield _crashed(i, exc)


def _named(records: list[dict], status: str) -> list[str]:
    return [f"{r['kernel']} ({r['method']}: {r['case']})" for r in records if r["status"] == status]


def _default_jobs() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))  # each worker holds its own torch + triton (a few hundred MB)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="full sweep (default: the subset)")
    parser.add_argument("--jobs", type=int, default=_default_jobs(), help="parallel compiles")
    parser.add_argument(
        "--only", metavar="TEXT", help='compile only launches whose "method case" contains TEXT'
    )
    opts = parser.parse_args(argv)

    problem = backend_problem()
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
    _JOBS[:] = make_jobs(launches)

    # Fresh cache: every kernel really compiles (and ptxas reports registers and spills).
    cache = tempfile.TemporaryDirectory(prefix="fastpeft-sm90-")
    os.environ["TRITON_CACHE_DIR"] = cache.name
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"

    records = []
    with cache:
        for record in compile_all(opts.jobs):
            records.append(record)
            _emit(record)

    launched = {r["kernel"] for r in records}
    missing = {} if opts.only else hopper_launches.not_launched(launches)
    ok = [r for r in records if r["status"] == "ok"]
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
        seconds=round(time.perf_counter() - t0, 1),
        subset="all" if opts.all else "default",
        jobs=opts.jobs,
    )
    _emit({"summary": summary})
    bad = summary["failed"] or summary["over_shared_limit"] or missing
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
