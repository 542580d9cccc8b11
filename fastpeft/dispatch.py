"""The one dispatcher: which implementation of a method runs a call.

Every op resolves its `backend` here, with one vocabulary for all methods (`BACKENDS`) and one
precedence: an explicit argument, else the FASTPEFT_BACKEND environment variable, else "auto".

- An explicit backend the method does not implement, or one that cannot run on the device, the
  dtype or a size (LoRA rank on Triton, say), raises, naming the argument.
- FASTPEFT_BACKEND pins every method that implements the named backend, and raises where that
  implementation cannot run; methods without it (e.g. "cuda", which only SPIDER has) resolve as
  "auto" would.
- "auto" takes the first implementation in the registry's order that can run the call (Triton on
  CUDA, the C++/CUDA extension for SPIDER where it is built, else the PyTorch path), except where
  a method names backends to race (LoRA: fused "triton" against "hybrid", cuBLAS for the base
  products): on a GPU those that can run the call are timed once, on the call's shape, and the
  fastest is kept. Decisions are cached per (method, device, dtype, sizes, variant, shape
  bucket), so they are made once and deterministic afterwards; `decisions()` shows the table and
  `races()` the timings behind it. Under torch.compile nothing is timed or cached.
"""

import torch

from . import _ext, _triton, env, registry

BACKENDS = ("auto", "torch", "triton", "hybrid", "cpp", "cuda")
ENV_VAR = "FASTPEFT_BACKEND"

# (method, device, dtype, sizes, shape bucket) -> backend chosen for "auto". A plain dict rather
# than functools.cache: the wrappers calling `resolve` are traced by torch.compile.
_decisions: dict[tuple, str] = {}
# The same keys -> {backend: seconds} of the race that decided them.
_races: dict[tuple, dict[str, float]] = {}
# (method, backend) -> implementation module: the ops look it up on every call.
_modules: dict[tuple[str, str], object] = {}


def check_backend_name(backend, argument: str = "backend") -> None:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{argument} must be one of {BACKENDS}, got {backend!r}")


def _on(device: torch.device, device_types: tuple[str, ...]) -> bool:
    return "*" in device_types or device.type in device_types


def _missing(impl: registry.Implementation) -> str | None:
    """Why what `impl` needs is not here, or None."""
    if impl.needs == "triton" and _triton.import_error() is not None:
        return f"triton does not import ({_triton.import_error()})"
    if impl.needs in ("extension", "extension-cuda") and not _ext.available():
        return f"fastpeft._C is not built ({_ext.import_error()}); rebuild: {_ext.REBUILD_CMD}"
    if impl.needs == "extension-cuda" and not _ext.require().has_cuda():
        return (
            "fastpeft._C was built without CUDA kernels; rebuild it with a CUDA toolkit "
            f"({_ext.REBUILD_CMD}) or use backend='triton'"
        )
    return None


def _machine_reason(impl: registry.Implementation, device: torch.device) -> str | None:
    """Why `impl` cannot run on `device` here (device type, Triton, the extension), or None."""
    if not _on(device, impl.devices):
        return f"it runs on {' or '.join(impl.devices)} tensors, not {device.type}"
    if impl.needs == "triton" and not _triton.usable_on(device):
        return _triton.why_unusable(device)
    return _missing(impl)


def _argument_reason(impl: registry.Implementation, dtype, sizes) -> str | None:
    """Why `impl` cannot take a call's `dtype` or `sizes` (the caller's arguments), or None."""
    if dtype is not None and dtype not in impl.dtypes:
        return f"it does not support {dtype} tensors"
    for name, value in (sizes or {}).items():
        limit = impl.limits.get(name)
        if limit is not None and value > limit:
            return f"it supports {name} <= {limit}, got {value}"
    return None


def why_not(
    impl: registry.Implementation,
    device: torch.device,
    dtype: torch.dtype | None = None,
    sizes: dict | None = None,
) -> str | None:
    """Why `impl` cannot run a call on `device` with `dtype` and `sizes`, or None if it can."""
    return _machine_reason(impl, device) or _argument_reason(impl, dtype, sizes)


def _eligible(method: registry.Method, device, dtype, sizes) -> list[str]:
    """The backends "auto" may choose for the call, in the registry's order."""
    found = [
        impl.backend
        for impl in method.implementations
        if _on(device, impl.auto_devices) and why_not(impl, device, dtype, sizes) is None
    ]
    if not found:
        raise RuntimeError(
            f"fastpeft {method.label}: no implementation runs on {device.type} tensors of "
            f"{dtype} with {sizes or 'these sizes'}"
        )
    return found


def race(method: registry.Method, backends, device, dtype, sizes, shape, variant, key) -> str:
    """Time `backends` on the call's shape with the method's race function, record the timings
    under `key`, and return the fastest (the first in `backends` on a tie)."""
    seconds = registry.load(method.race)(backends, device, dtype, shape, sizes, variant)
    _races[key] = dict(seconds)
    return min(backends, key=lambda b: seconds[b])


def _auto(method: registry.Method, device, dtype, sizes, shape, variant, key) -> str:
    found = _eligible(method, device, dtype, sizes)
    contenders = [b for b in found if b in method.raced]
    if len(contenders) > 1 and shape and key is not None:
        return race(method, contenders, device, dtype, sizes, shape, variant, key)
    return found[0]


def _checked(method, backend: str, device, dtype, sizes, argument: str) -> str:
    impl = method.implementation(backend)
    if impl is None:
        raise ValueError(
            f"{argument}={backend!r}: fastpeft {method.label} has no {backend} implementation "
            f"(it has {method.backends})"
        )
    # A missing device or build is the machine's (RuntimeError); a dtype or size the
    # implementation cannot take is the caller's argument (ValueError).
    reason = _machine_reason(impl, device)
    if reason is not None:
        raise RuntimeError(f"fastpeft {method.label} {argument}={backend!r}: {reason}")
    reason = _argument_reason(impl, dtype, sizes)
    if reason is not None:
        raise ValueError(f"fastpeft {method.label} {argument}={backend!r}: {reason}")
    return backend


def resolve(
    method: str,
    backend: str,
    device: torch.device,
    dtype: torch.dtype | None = None,
    sizes: dict | None = None,
    argument: str = "backend",
    shape: tuple[int, ...] = (),
    variant: tuple = (),
) -> str:
    """The concrete backend that runs `method` for a call on `device` (see the module docs).

    `dtype` and `sizes` (e.g. {"rank": 64}) are checked against each implementation's support;
    `shape` (the call's problem size, e.g. (M, N, K)) keys the cached decision by its power-of-two
    bucket and is what a race times; `variant` (e.g. LoRA's adapter dtype and dropout) keys it
    too and is handed to the race; `argument` names the parameter in error messages.
    """
    check_backend_name(backend, argument)
    spec = registry.get(method)
    if backend != "auto":
        return _checked(spec, backend, device, dtype, sizes, argument)
    override = env.backend_override()
    if override not in (None, "auto"):
        check_backend_name(override, f"environment variable {ENV_VAR}")
        if spec.implementation(override) is not None:
            return _checked(spec, override, device, dtype, sizes, f"{ENV_VAR}")
    key = (method, str(device), dtype, tuple(sorted((sizes or {}).items())), variant,
           _bucket(shape))  # fmt: skip
    if torch.compiler.is_compiling():
        # Pure: no timing and no cache writes inside a traced graph (a decision made eagerly
        # before is kept).
        return _decisions.get(key) or _auto(spec, device, dtype, sizes, (), (), None)
    choice = _decisions.get(key)
    if choice is None:
        choice = _decisions[key] = _auto(spec, device, dtype, sizes, shape, variant, key)
    return choice


def _bucket(shape: tuple[int, ...]) -> tuple[int, ...]:
    # Powers of two: the token count changes with every batch, the decision need not.
    return tuple(1 << max(int(n) - 1, 0).bit_length() for n in shape)


def implementation(method: str, backend: str):
    """The module implementing `method` on the concrete `backend` (imported on first use)."""
    module = _modules.get((method, backend))
    if module is None:
        impl = registry.get(method).implementation(backend)
        if impl is None:
            raise ValueError(f"fastpeft {method} has no {backend!r} implementation")
        module = _modules[(method, backend)] = impl.load()
    return module


def decisions() -> dict[tuple, str]:
    """A copy of the cached "auto" decisions: (method, device, dtype, sizes, variant, shape
    bucket) -> backend."""
    return dict(_decisions)


def races() -> dict[tuple, dict[str, float]]:
    """The timings behind the raced decisions: the same keys -> {backend: seconds}."""
    return {key: dict(seconds) for key, seconds in _races.items()}


def clear_decisions() -> None:
    """Forget the cached "auto" decisions and their races (e.g. after rebuilding the
    extension)."""
    _decisions.clear()
    _races.clear()
