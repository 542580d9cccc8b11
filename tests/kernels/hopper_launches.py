"""The launches a Hopper GPU would get from every registered method, recorded without a GPU.

Every method of fastpeft/registry.py with a `compile_check` names a function (in
fastpeft/triton_path/samples.py) that drives its Triton host code with meta tensors; run inside
`launch.recording(launch.HOPPER, ...)`, the host code configures each launch for sm_90 and hands
it over instead of running it. Nothing here lists methods or kernels: both come from the registry
and from the modules of `fastpeft.kernels`, so a new method or kernel is checked without edits.

Shared by the sm_90 compile script (compile_sm90.py, run with Triton's interpreter off) and the
fast recording test (run under the interpreter: recording never runs a kernel, and the host
configuration depends only on the forced target, so both see the same launches).
"""

import contextlib
import importlib
import pkgutil
from typing import NamedTuple

from fastpeft import registry
from fastpeft.triton_path import launch


class Launch(NamedTuple):
    method: str  # the registry name of the method whose driver made it
    case: str  # the driver's description of the call (dtypes, shapes, branch)
    kernel: object  # the JITFunction (an InterpretedFunction under TRITON_INTERPRET=1)
    grid: tuple
    args: tuple
    kwargs: dict


def checked_methods() -> list[registry.Method]:
    """The registered methods with Triton launches to check, in registration order."""
    return [m for m in registry.METHODS.values() if m.compile_check is not None]


def record(method: registry.Method, full: bool, target=launch.HOPPER) -> list[Launch]:
    """Every launch `method`'s compile_check driver makes when configured for `target`."""
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
        launches.append(Launch(method.name, case, kernel, grid, args, kwargs))

    driver = registry.load(method.compile_check)
    with launch.recording(target, keep):
        driver(tag, full)
    return launches


def record_all(full: bool, only: str | None = None) -> list[Launch]:
    """The launches of every checked method; with `only`, those whose "method case" contains it."""
    launches = [one for m in checked_methods() for one in record(m, full)]
    return [x for x in launches if not only or only in f"{x.method} {x.case}"]


def kernel_key(kernel) -> tuple[str, str]:
    """(module, name) of a JITFunction or InterpretedFunction (both wrap the Python function)."""
    return kernel.fn.__module__, kernel.fn.__name__


def kernels_to_launch() -> dict[str, list[str]]:
    """{module: its `*_kernel` Triton functions} for every module of fastpeft.kernels: the entry
    points, each of which some method's driver must launch (helpers are named without it)."""
    import fastpeft.kernels
    from triton.runtime.jit import KernelInterface  # JITFunction and InterpretedFunction

    out = {}
    for info in pkgutil.iter_modules(fastpeft.kernels.__path__, "fastpeft.kernels."):
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
