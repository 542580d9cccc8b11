"""Compile every Triton launch of fastpeft's host code for an H100 (sm_90), with no GPU needed.

The CPU tier runs the kernels through Triton's interpreter, which accepts programs that the GPU
compiler rejects and never allocates shared memory. This script drives the real host launchers
(fastpeft/ops/{lora,ia3,adapter}_triton.py) with meta tensors at realistic shapes, their GPU block
configs forced on, and records every kernel launch instead of running it. Each distinct launch is
specialized as Triton's JIT would specialize it on a GPU (ints equal to 1 become constexprs,
16-divisible ints and aligned pointers get divisibility hints), then compiled TTIR -> PTX -> cubin
for sm_90 with Triton's bundled ptxas, whose log gives registers and spills.

Output: one JSON line per distinct compile, then one {"summary": ...} line. Exit status: 0 when
every compile succeeds within the shared-memory limit and every kernel was launched, 1 otherwise,
77 (with a {"skip": reason} line) when Triton's NVIDIA backend cannot compile here at all.

    python tests/kernels/compile_sm90.py            # representative subset (the CPU-tier test)
    python tests/kernels/compile_sm90.py --all      # every dtype combination, rank and activation
"""

import os

# Triton decides at kernel-definition time whether to interpret: drop the flag before anything can
# import triton or fastpeft's kernels.
os.environ.pop("TRITON_INTERPRET", None)

import argparse
import contextlib
import functools
import inspect
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

import torch

SKIP_EXIT = 77
SHARED_LIMIT_KIB = 227  # H100: at most 227 KiB of shared memory per block (opt-in maximum)
ARCH = 90
FAMILIES = ("lora", "ia3", "adapter")

BF16, FP16, FP32, I64 = torch.bfloat16, torch.float16, torch.float32, torch.int64
_NAMES = {BF16: "bf16", FP16: "fp16", FP32: "fp32"}

# Realistic shapes: 8192 tokens through 4096-wide projections (LLaMA-7B-like); IA3 also on the
# 11008 -> 4096 down_proj; adapters with a 256-wide bottleneck.
M_TOKENS, HIDDEN, FFN, BOTTLENECK = 8192, 4096, 11008, 256

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
# Recording the launches the real host code makes
# ------------------------------------------------------------------------------------------------


class _Capture:
    """Every launch made through a host module's `kernels`, tagged with the current case."""

    def __init__(self):
        self.launches = []  # (family, case, fn, grid, args, kwargs)
        self.family = ""
        self.case = ""

    @contextlib.contextmanager
    def tag(self, family: str, case: str):
        self.family, self.case = family, case
        try:
            yield
        finally:
            self.family, self.case = "", ""


class _Launcher:
    def __init__(self, fn, capture: _Capture):
        self.fn, self.capture = fn, capture

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            c = self.capture
            c.launches.append((c.family, c.case, self.fn, grid, args, kwargs))

        return launch


class _RecordingKernels:
    """Stands in for a host module's `kernels` module: JIT functions record instead of launching."""

    def __init__(self, module, capture: _Capture):
        self._module, self._capture = module, capture

    def __getattr__(self, name):
        from triton.runtime.jit import JITFunction

        obj = getattr(self._module, name)
        return _Launcher(obj, self._capture) if isinstance(obj, JITFunction) else obj


@contextlib.contextmanager
def gpu_host(module, capture: _Capture):
    """Patch a host module so that meta tensors get the GPU configs and launches are recorded.

    Every helper of the module whose first parameter is `device` (block configs, dot flags) is
    called with a CUDA device instead, so the launches carry exactly the GPU block sizes.
    """
    cuda = torch.device("cuda")
    patched = {}
    for name, obj in list(vars(module).items()):
        if not (inspect.isfunction(obj) and obj.__module__ == module.__name__):
            continue
        params = list(inspect.signature(obj).parameters)
        if params and params[0] == "device":

            def on_cuda(*args, _fn=obj, **kwargs):
                return _fn(cuda, *args[1:], **kwargs)

            patched[name] = obj
            setattr(module, name, functools.wraps(obj)(on_cuda))
    if not patched:
        raise RuntimeError(f"{module.__name__}: no `device`-taking config helper to force to CUDA")
    real_kernels = module.kernels
    module.kernels = _RecordingKernels(real_kernels, capture)
    try:
        yield
    finally:
        module.kernels = real_kernels
        for name, obj in patched.items():
            setattr(module, name, obj)


@contextlib.contextmanager
def allow_tf32(enabled: bool):
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def _empty(*shape, dtype):
    return torch.empty(shape, device="meta", dtype=dtype)


def _seed(count: int, p: float):
    return _empty(count, dtype=I64) if p > 0 else None  # as the frontends draw it


# A driver's `mode`: "all" walks every branch the host code can take (bias, dropout, pair, residual,
# which gradients are needed); "heavy" makes one launch of each kernel with everything on,
# dropout included; "light" the same without dropout (the Philox code is the slow part to compile).
_PS = {"all": (0.0, 0.1), "heavy": (0.1,), "light": (0.0,)}


def drive_lora(host, capture, label, mode, base, adapter, rank):
    M, K, N = M_TOKENS, HIDDEN, HIDDEN
    x, w, b = _empty(M, K, dtype=base), _empty(N, K, dtype=base), _empty(N, dtype=base)
    lora_a, lora_b = _empty(rank, K, dtype=adapter), _empty(N, rank, dtype=adapter)
    dy = _empty(M, N, dtype=base)
    every = mode == "all"
    for p in _PS[mode]:
        seed = _seed(1, p)
        t = None
        for bias in (None, b) if every else (b,):
            with capture.tag("lora", f"{label} fwd bias={bias is not None} p={p}"):
                _, t = host.forward(x, w, bias, lora_a, lora_b, seed, 2.0, p)
        for need_dx in (True, False) if every else (True,):
            with capture.tag("lora", f"{label} bwd need_dx={need_dx} p={p}"):
                host.backward(dy, x, w, lora_a, lora_b, t, seed, 2.0, p, need_dx)
    with capture.tag("lora", f"{label} keep_mask"):
        host.dropout_keep_mask(_empty(1, dtype=I64), M, K, 0.1)


def drive_ia3(host, capture, label, mode, base, vec):
    M = M_TOKENS
    every = mode == "all"
    # (N, K): k/v_proj 4096 x 4096 and down_proj 11008 -> 4096, each in both scaling cases.
    for N, K in ((HIDDEN, HIDDEN), (HIDDEN, FFN)) if every else ((HIDDEN, FFN),):
        x, w, b = _empty(M, K, dtype=base), _empty(N, K, dtype=base), _empty(N, dtype=base)
        dy = _empty(M, N, dtype=base)
        for feedforward in (False, True):
            where = f"{label} {K}->{N} {'input' if feedforward else 'output'}"
            ia3_l = _empty(K if feedforward else N, dtype=vec)
            z = None
            for bias in (None, b) if every else (b,):
                for save_z in (False,) if feedforward else (False, True) if every else (True,):
                    with capture.tag("ia3", f"{where} fwd bias={bias is not None} z={save_z}"):
                        _, z_out = host.forward(x, w, bias, ia3_l, feedforward, save_z)
                    z = z_out if z_out is not None else z
            saved = x if feedforward else z
            needs = ((True, True), (True, False), (False, True))
            if not every:  # dx alone is a branch only of the output case's dl-free kernels
                needs = ((True, True), (False, True))
            for need_dx, need_dl in needs:
                with capture.tag("ia3", f"{where} bwd dx={need_dx} dl={need_dl}"):
                    host.backward(dy, saved, w, ia3_l, feedforward, need_dx, need_dl)


def drive_adapter(host, capture, label, mode, act_dtype, w_dtype, activations):
    M, D, H = M_TOKENS, HIDDEN, BOTTLENECK
    z, res, dy = (_empty(M, D, dtype=act_dtype) for _ in range(3))
    wd, wu = _empty(H, D, dtype=w_dtype), _empty(D, H, dtype=w_dtype)
    wd2, wu2 = _empty(H, D, dtype=w_dtype), _empty(D, H, dtype=w_dtype)
    every = mode == "all"
    for p in _PS[mode]:
        for act in activations:
            where = f"{label} {act} p={p}"
            seed = _seed(1, p)
            pre = None
            for residual in (None, res) if every else (res,):
                with capture.tag("adapter", f"{where} fwd residual={residual is not None}"):
                    _, pre = host.forward(z, wd, wu, residual, seed, 1.0, p, act)
            for residual_is_z in (True, False) if every else (True,):
                for need_dz in (True, False) if every else (True,):
                    case = f"{where} bwd residual_is_z={residual_is_z} need_dz={need_dz}"
                    with capture.tag("adapter", case):
                        host.backward(dy, z, wd, wu, pre, seed, 1.0, p, act, residual_is_z, need_dz)
            seeds = _seed(2, p)
            with capture.tag("adapter", f"{where} pair fwd"):
                _, _, pre2 = host.forward_pair(z, wd, wu, wd2, wu2, seeds, 1.0, p, act)
            for need_dx in (True, False) if every else (True,):
                with capture.tag("adapter", f"{where} pair bwd need_dx={need_dx}"):
                    host.backward_pair(
                        dy, dy, z, wd, wu, wd2, wu2, pre2, seeds, 1.0, p, act, need_dx
                    )
    with capture.tag("adapter", f"{label} keep_mask"):
        host.dropout_keep_mask(_empty(2, dtype=I64), M, D, 0.1)
    for act in activations:
        with capture.tag("adapter", f"{label} activation {act}"):
            host.activation_and_grad(_empty(1 << 20, dtype=FP32), act)


ACTIVATIONS = ("tanh", "relu", "gelu", "silu")
DTYPES = ((BF16, BF16), (BF16, FP32), (FP16, FP16), (FP32, FP32))  # (base/activations, adapter)


def plan(full: bool) -> list[tuple]:
    """[(family, label, driver, mode, args, tf32)]: what to drive.

    --all: every branch for every dtype combination, LoRA ranks 16, 128 and 256 (MAX_RANK), and
    fp32 dots both in IEEE and in TF32 (torch.backends.cuda.matmul.allow_tf32). The default subset
    (the CPU-tier test) walks every branch on a bf16 base with bf16 adapters, then compiles each
    kernel once more with everything on for bf16 with fp32 adapters (PEFT's default dtypes), for
    fp32 (without dropout), for LoRA rank 128, and for the launches that once overflowed shared
    memory: 4-byte and rank-wide tiles under TF32.
    """
    runs = []

    def add(families, base, adapter, mode, ranks=(16,), activations=("gelu",), tf32=False):
        tag = f"{_NAMES[base]}/{_NAMES[adapter]}" + (" tf32" if tf32 else "")
        if "lora" in families:
            for rank in ranks:
                args = (base, adapter, rank)
                runs.append(("lora", f"{tag} r={rank}", drive_lora, mode, args, tf32))
        if "ia3" in families:
            runs.append(("ia3", tag, drive_ia3, mode, (base, adapter), tf32))
        if "adapter" in families:
            args = (base, adapter, activations)
            runs.append(("adapter", tag, drive_adapter, mode, args, tf32))

    if full:
        for base, adapter in DTYPES:
            add(FAMILIES, base, adapter, "all", (16, 128, 256), ACTIVATIONS)
        for base, adapter in ((BF16, FP32), (FP32, FP32)):  # where fp32 dots run
            add(FAMILIES, base, adapter, "all", (16, 128, 256), ACTIVATIONS, tf32=True)
        return runs
    add(FAMILIES, BF16, BF16, "all", (16,), ACTIVATIONS)
    add(FAMILIES, BF16, FP32, "heavy")
    add(FAMILIES, FP32, FP32, "light")
    add(("lora",), BF16, BF16, "heavy", (128,))
    add(("lora",), FP32, FP32, "light", (16,), tf32=True)
    add(("lora",), BF16, FP32, "light", (256,), tf32=True)
    return runs


def capture_launches(full: bool, only: str | None = None) -> _Capture:
    import importlib

    capture = _Capture()
    hosts = {f: importlib.import_module(f"fastpeft.ops.{f}_triton") for f in FAMILIES}
    for family, label, driver, mode, args, tf32 in plan(full):
        if only and only not in f"{family} {label}":
            continue
        with gpu_host(hosts[family], capture), allow_tf32(tf32):
            driver(hosts[family], capture, label, mode, *args)
    return capture


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


def make_jobs(capture: _Capture) -> list[dict]:
    """One job per distinct (kernel, signature, constexprs, attrs, options)."""
    jobs, index = [], {}
    for family, case, fn, _grid, args, kwargs in capture.launches:
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
                family=family,
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
        family=job["family"],
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


def expected_kernels() -> dict[str, list[str]]:
    """The `*_kernel` JIT functions of each family's kernel module: each must be launched."""
    import importlib

    from triton.runtime.jit import JITFunction

    out = {}
    for family in FAMILIES:
        module = importlib.import_module(f"fastpeft.kernels.{family}")
        out[family] = sorted(
            name
            for name, obj in vars(module).items()
            if isinstance(obj, JITFunction) and name.endswith("_kernel")
        )
    return out


def _named(records: list[dict], status: str) -> list[str]:
    return [f"{r['kernel']} ({r['case']})" for r in records if r["status"] == status]


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
        "--only", metavar="TEXT", help='drive only runs whose "family dtypes" label contains TEXT'
    )
    opts = parser.parse_args(argv)

    problem = backend_problem()
    if problem is not None:
        _emit({"skip": problem})
        return SKIP_EXIT

    t0 = time.perf_counter()
    capture = capture_launches(opts.all, opts.only)
    upcast = [c for *c, kw in capture.launches if kw.get("UPCAST")]
    if upcast:  # the host took its interpreter path: the compiles would not be the GPU's
        _emit({"error": f"launch with UPCAST=True (CPU config) in case {upcast[0][1]!r}"})
        return 1
    _JOBS[:] = make_jobs(capture)

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
    missing = {f: [k for k in ks if k not in launched] for f, ks in expected_kernels().items()}
    missing = {f: ks for f, ks in missing.items() if ks and not opts.only}
    ok = [r for r in records if r["status"] == "ok"]
    summary = dict(
        compiles=len(records),
        launches=len(capture.launches),
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
