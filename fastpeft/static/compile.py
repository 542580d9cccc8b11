"""Every Triton launch of fastpeft's host code compiled for a CUDA arch, with no GPU needed.

The host code, run inside `launch.recording(target, record)` on meta tensors, configures each
launch for the target and hands it to `record` instead of running it (`record` below drives a
registered method's `compile_check`). Each distinct launch is then specialized exactly as
Triton's JIT would on a GPU (ints equal to 1 become constexprs, 16-divisible ints and aligned
pointers get divisibility hints), compiled TTIR -> PTX -> cubin with Triton's bundled ptxas in
forked worker processes, and read: ptxas's log gives registers and spills, the metadata shared
memory, and `inspect_code` the tensor-core use and instruction counts.

Triton decides at kernel-definition time whether to interpret: the process that compiles must
have imported fastpeft.kernels with TRITON_INTERPRET unset.

    launches = record(registry.METHODS["lora"], full=False, arch=90)
    jobs = distinct(launches, 90)
    compiled = compile_jobs(jobs, 90, workers=2, cache_dir=Path("~/.cache/fastpeft-static"))
"""

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import io
import json
import multiprocessing
import os
import pkgutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from .. import registry
from ..triton_path import launch as launch_mod
from .inspect_code import Inspection, inspect, ptxas_usage

# The most shared memory one block may use (the opt-in maximum), per SM version.
SHARED_LIMIT_BYTES = {80: 163 * 1024, 90: 227 * 1024}  # A100: 163 KiB; H100: 227 KiB
_CACHE_FORMAT = 2  # bump when a cached record's meaning changes


@dataclass
class Launch:
    """One launch the host code made: what a recorder receives, labelled with the method that
    made it and the driver's description of the call."""

    method: str
    case: str
    kernel: object  # the JITFunction (an InterpretedFunction under TRITON_INTERPRET=1)
    grid: tuple
    args: tuple
    kwargs: dict


@dataclass
class Job:
    """One distinct specialization of a kernel for one arch, and the launches it stands for."""

    kernel: object
    arch: int
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    config: dict  # the kernel's declared constexprs, JSON-able
    pointers: dict  # pointer argument (without "_ptr") -> element type, e.g. {"x": "bf16"}
    key: str  # hash of the specialization, the kernel's source, Triton, ptxas and the arch
    launches: list[Launch]


@dataclass(kw_only=True)
class Compiled(Inspection):
    """A job's compile: its status ("ok", "fail", or "smem" over the arch's shared-memory limit),
    what ptxas and the metadata say, and the code's Inspection (None fields where it failed).
    `cached` (not compared) says the record came from the cache instead of a compile."""

    kernel: str
    arch: int
    status: str
    error: str | None = None
    registers: int | None = None
    spill_bytes: int | None = None
    shared_bytes: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None
    config: dict = dataclasses.field(default_factory=dict)
    pointers: dict = dataclasses.field(default_factory=dict)
    seconds: float | None = None  # the compile's time (the original one when cached)
    cached: bool = dataclasses.field(default=False, compare=False)

    @property
    def shared_kib(self) -> float | None:
        return None if self.shared_bytes is None else round(self.shared_bytes / 1024, 1)


# ------------------------------------------------------------------------------------------------
# Recording the registry's launches
# ------------------------------------------------------------------------------------------------


def checked_methods() -> list[registry.Method]:
    """The registered methods with Triton launches to check, in registration order."""
    return [m for m in registry.METHODS.values() if m.compile_check is not None]


def record(method: registry.Method, full: bool = False, arch: int = 90) -> list[Launch]:
    """Every launch `method`'s compile_check driver makes when configured for SM `arch`."""
    launches: list[Launch] = []
    case = ""

    @contextlib.contextmanager
    def tag(description: str):
        nonlocal case
        case = description
        try:
            yield
        finally:
            case = ""

    def keep(kernel, grid, args, kwargs):
        launches.append(Launch(method.name, case, kernel, tuple(grid), tuple(args), dict(kwargs)))

    driver = registry.load(method.compile_check)
    with launch_mod.recording(launch_mod.Target("cuda", arch), keep):
        driver(tag, full)
    return launches


def record_all(full: bool = False, only: str | None = None, arch: int = 90) -> list[Launch]:
    """The launches of every checked method; with `only`, those whose "method case" contains it."""
    launches = [one for m in checked_methods() for one in record(m, full, arch)]
    return [x for x in launches if not only or only in f"{x.method} {x.case}"]


def kernel_key(kernel) -> tuple[str, str]:
    """(module, name) of a JITFunction or InterpretedFunction (both wrap the Python function)."""
    return kernel.fn.__module__, kernel.fn.__name__


def kernels_to_launch() -> dict[str, list[str]]:
    """{module: its `*_kernel` Triton functions} for every module of fastpeft.kernels: the entry
    points, each of which some method's driver must launch (helpers are named without it)."""
    from triton.runtime.jit import KernelInterface  # JITFunction and InterpretedFunction

    from .. import kernels

    out = {}
    for info in pkgutil.iter_modules(kernels.__path__, f"{kernels.__name__}."):
        module = importlib.import_module(info.name)
        names = sorted(
            name
            for name, obj in vars(module).items()
            if isinstance(obj, KernelInterface)
            and name.endswith("_kernel")
            and obj.fn.__module__ == module.__name__  # defined here, not imported
        )
        if names:
            out[module.__name__] = names
    return out


def not_launched(launches: list[Launch]) -> dict[str, list[str]]:
    """The kernels of kernels_to_launch() that no launch reached, by module."""
    launched = {kernel_key(x.kernel) for x in launches}
    missing = {
        module: [name for name in names if (module, name) not in launched]
        for module, names in kernels_to_launch().items()
    }
    return {module: names for module, names in missing.items() if names}


# ------------------------------------------------------------------------------------------------
# Whether Triton can compile for an arch here
# ------------------------------------------------------------------------------------------------


def arch_target(arch: int):
    """Triton's GPUTarget for CUDA SM `arch` (80: A100, 90: H100)."""
    from triton.backends.compiler import GPUTarget

    if arch not in SHARED_LIMIT_BYTES:
        raise ValueError(f"sm_{arch}: only {sorted(SHARED_LIMIT_BYTES)} are supported")
    return GPUTarget("cuda", arch, 32)


def backend_problem(arch: int = 90) -> str | None:
    """None when Triton's NVIDIA backend can compile for sm_`arch` here, else why not."""
    try:
        import triton
        from triton.compiler import make_backend

        make_backend(arch_target(arch))
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

        ptxas = get_ptxas(arch).path
    except Exception as exc:
        return f"triton's ptxas for sm_{arch} is not found: {type(exc).__name__}: {exc}"
    try:
        subprocess.run([ptxas, "--version"], check=True, capture_output=True, timeout=120)
    except Exception as exc:
        return f"triton's ptxas ({ptxas}) does not run here: {type(exc).__name__}: {exc}"
    return None


# ------------------------------------------------------------------------------------------------
# Specializing
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Triton 3.9 warns once that its fp-fusion default will change; the options (and so the
    # cache key) record the value used.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION is unset")
        yield


@functools.cache
def _backend(arch: int):
    from triton.compiler import make_backend

    return make_backend(arch_target(arch))


@functools.cache
def _binder(fn, arch: int):
    from triton.runtime.jit import create_function_from_signature

    return create_function_from_signature(fn.signature, fn.params, _backend(arch))


def specialize(launch: Launch, arch: int):
    """(signature, constexprs, attrs, options) exactly as JITFunction.run builds them on a GPU of
    SM `arch`."""
    from triton import knobs

    fn = launch.kernel
    if not hasattr(fn, "_pack_args"):
        raise TypeError(
            f"{type(fn).__name__} {fn.fn.__name__} is not a JITFunction: Triton's interpreter was "
            "on (TRITON_INTERPRET=1) when fastpeft.kernels was imported; compile in a process "
            "started without it"
        )
    kwargs = dict(launch.kwargs)
    kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
    for name in ("instrumentation_mode", "fpsan_homomorphic_casts"):
        if hasattr(knobs.compilation, name):
            kwargs[name] = getattr(knobs.compilation, name)
    with _quiet():
        bound, specialization, options = _binder(fn, arch)(*launch.args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(
            _backend(arch), kwargs, bound, specialization, options
        )
    return signature, constexprs, attrs, options


def _jsonable(value):
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)


def _cache_key(src, options, arch: int) -> str:
    """Triton's own cache key for this compile (its version and source, the kernel's source and
    its callees', the specialization, ptxas's version, the options and the env vars that change
    code), hashed with the arch and this record's format."""
    try:
        from triton.runtime.cache import triton_key

        triton_id = triton_key()
    except ImportError:
        import triton

        triton_id = triton.__version__
    try:
        from triton._C.libtriton import get_cache_invalidating_env_vars

        env = sorted(get_cache_invalidating_env_vars().items())
    except ImportError:
        env = []
    text = f"{triton_id}-{src.hash()}-{_backend(arch).hash()}-{options.hash()}-{env}"
    return hashlib.sha256(f"{_CACHE_FORMAT}-sm_{arch}-{text}".encode()).hexdigest()


def distinct(launches: list[Launch], arch: int) -> list[Job]:
    """One Job per distinct specialization for SM `arch`, in first-launch order; each keeps the
    launches it stands for."""
    from triton.compiler import ASTSource

    jobs: dict[str, Job] = {}
    for one in launches:
        signature, constexprs, attrs, options = specialize(one, arch)
        fn = one.kernel
        key = _cache_key(ASTSource(fn, signature, constexprs, attrs), options, arch)
        if key in jobs:
            jobs[key].launches.append(one)
            continue
        declared = {p.name for p in fn.params if p.is_constexpr}
        names = list(signature)
        jobs[key] = Job(
            kernel=fn,
            arch=arch,
            signature=signature,
            constexprs=constexprs,
            attrs=attrs,
            options=dict(options.__dict__),
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
            key=key,
            launches=[one],
        )
    return list(jobs.values())


# ------------------------------------------------------------------------------------------------
# Compiling
# ------------------------------------------------------------------------------------------------

_JOBS: list[Job] = []  # read by the forked workers
_RECORDS: Path | None = None  # where the workers cache their records


def _base(job: Job, **fields) -> Compiled:
    return Compiled(
        kernel=job.kernel.__name__,
        arch=job.arch,
        num_warps=job.options["num_warps"],
        num_stages=job.options["num_stages"],
        config=job.config,
        pointers=job.pointers,
        **fields,
    )


def _load_cached(path: Path) -> Compiled | None:
    try:
        data = json.loads(path.read_text())
        return dataclasses.replace(Compiled(**data), cached=True)
    except (OSError, ValueError, TypeError):
        return None


def _store(path: Path, compiled: Compiled) -> None:
    data = dataclasses.asdict(compiled)
    data.pop("cached")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one


def _short(message: str) -> str:
    return message if len(message) <= 6000 else f"{message[:3000]} [...] {message[-3000:]}"


def compile_one(i: int) -> Compiled:
    """Compile job i of _JOBS (or read its cached record): status, registers, spills, shared
    memory and the Inspection of its code."""
    import triton
    from triton.compiler import ASTSource

    job = _JOBS[i]
    cached_path = None if _RECORDS is None else _RECORDS / f"{job.key}.json"
    if cached_path is not None and cached_path.exists():
        found = _load_cached(cached_path)
        if found is not None:
            return found
    src = ASTSource(job.kernel, job.signature, job.constexprs, job.attrs)
    log = io.StringIO()  # triton prints the ptxas log (and, on failure, the whole PTX) to stdout
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log), _quiet():
            kernel = triton.compile(src, target=arch_target(job.arch), options=job.options)
    except Exception as exc:
        seconds = round(time.perf_counter() - t0, 2)
        return _base(
            job, status="fail", error=_short(f"{type(exc).__name__}: {exc}"), seconds=seconds
        )
    seconds = round(time.perf_counter() - t0, 2)
    shared, limit = kernel.metadata.shared, SHARED_LIMIT_BYTES[job.arch]
    status, error = "ok", None
    if shared > limit:
        status = "smem"
        error = f"{shared} bytes of shared memory > {limit // 1024} KiB on sm_{job.arch}"
    usage = dict(zip(("registers", "spill_bytes"), ptxas_usage(log.getvalue()), strict=True))
    code = dataclasses.asdict(inspect(kernel.asm))
    compiled = _base(
        job, status=status, error=error, shared_bytes=shared, seconds=seconds, **usage, **code
    )
    if cached_path is not None:
        _store(cached_path, compiled)
    return compiled


def _crashed(i: int, exc: BaseException) -> Compiled:
    error = f"the compiler killed its process ({type(exc).__name__}: {exc})"
    return _base(_JOBS[i], status="fail", error=error)


@contextlib.contextmanager
def _compile_env(cache_dir: Path | None) -> Iterator[Path]:
    """TRITON_CACHE_DIR under the cache folder (a temporary one without `cache_dir`), ptxas's
    log printed, and every compile real: only a real compile prints the log, so what the records
    cache (under records/) misses is compiled again, never read from Triton's cache."""
    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            cache_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastpeft-")))
        cache_dir = Path(cache_dir).expanduser()
        (cache_dir / "records").mkdir(parents=True, exist_ok=True)
        env = {
            "TRITON_CACHE_DIR": str(cache_dir / "triton"),
            "TRITON_DUMP_PTXAS_LOG": "1",
            "TRITON_ALWAYS_COMPILE": "1",
        }
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            yield cache_dir / "records"
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def iter_compiled(
    jobs: list[Job], arch: int, workers: int, cache_dir: Path | None = None
) -> Iterator[Compiled]:
    """compile_one's records in job order as they come, `workers` compiles at a time in forked
    processes. With `cache_dir`, Triton's cache and each job's record persist there (a second
    run reads the records instead of compiling); without it, a temporary folder.

    A compile that kills its process (an LLVM or MLIR abort) breaks the pool; the jobs left are
    then compiled one process each, so the culprit is named instead of hanging the run.
    """
    global _RECORDS
    wrong = [j.kernel.__name__ for j in jobs if j.arch != arch]
    if wrong:
        raise ValueError(f"jobs specialized for another arch than sm_{arch}: {wrong}")
    with _compile_env(cache_dir) as records:
        _JOBS[:], _RECORDS = jobs, records
        try:
            yield from _run(len(jobs), workers)
        finally:
            _JOBS.clear()
            _RECORDS = None


def _run(n: int, workers: int) -> Iterator[Compiled]:
    if workers <= 1 or n <= 1:
        yield from map(compile_one, range(n))
        return
    fork = multiprocessing.get_context("fork")
    done = 0
    try:
        with ProcessPoolExecutor(min(workers, n), mp_context=fork) as pool:
            for compiled in pool.map(compile_one, range(n)):
                done += 1
                yield compiled
        return
    except BrokenProcessPool:
        pass
    for i in range(done, n):
        try:
            with ProcessPoolExecutor(1, mp_context=fork) as pool:
                yield pool.submit(compile_one, i).result()
        except BrokenProcessPool as exc:
            yield _crashed(i, exc)


def compile_jobs(
    jobs: list[Job], arch: int, workers: int, cache_dir: Path | None = None
) -> list[Compiled]:
    """Every job compiled for SM `arch` (see iter_compiled), in job order."""
    return list(iter_compiled(jobs, arch, workers, cache_dir))


def compile_launches(
    launches: list[Launch], arch: int, workers: int, cache_dir: Path | None = None
) -> list[Compiled]:
    """The Compiled of each launch (one compile per distinct specialization), in launch order."""
    jobs = distinct(launches, arch)
    compiled = compile_jobs(jobs, arch, workers, cache_dir)
    by_launch = {id(x): c for job, c in zip(jobs, compiled, strict=True) for x in job.launches}
    return [by_launch[id(x)] for x in launches]


def resident_oracle(arch: int, cache_dir: Path | None, count: Callable[[Compiled], int | None]):
    """A `resident` callback for launch.recording: the launch host code asks about (a reduction's
    probe, waves.split) compiled here for SM `arch`, one compile per specialization, and
    `count(compiled)` (the CTAs per SM) answered, as a GPU's compile would answer it."""
    answers: dict[str, int | None] = {}

    def resident(kernel, args: tuple, kwargs: dict) -> int | None:
        [job] = distinct([Launch("probe", "probe", kernel, (1,), tuple(args), dict(kwargs))], arch)
        if job.key not in answers:
            [compiled] = compile_jobs([job], arch, 1, cache_dir)
            answers[job.key] = count(compiled) if compiled.status == "ok" else None
        return answers[job.key]

    return resident


def default_workers() -> int:
    """Parallel compiles: the CPUs this process may use, at most 8 (each worker holds its own
    torch and Triton, a few hundred MB)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))
