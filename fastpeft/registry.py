"""The method registry: every method fastpeft accelerates, declared once.

A `Method` says what each part of fastpeft needs to know about it: its implementations (one per
backend, with what each supports), its PyTorch reference, its patcher, its benchmark cases and
its entry in the sm_90 compile check. `patch`, the dispatcher, the bench suites, the compile check
and the tests all read this table; adding a method or a variant means new files in the obvious
places (an op, a torch_path and a triton_path module, a patcher, a bench case module) plus one
`Method(...)` here.

Everything is named by dotted path ("package.module" or "package.module:attribute") and imported
on first use: the registry imports nothing of fastpeft, so every layer can read it without import
circles, and `import fastpeft` never imports Triton.
"""

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SPIDER_DTYPES = (*FLOAT_DTYPES, torch.float64)


def load(path: str):
    """The module "a.b" or the attribute "a.b:name" a registry entry names."""
    module_name, _, attribute = path.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


@dataclass(frozen=True)
class Implementation:
    """One backend's implementation of a method, and what it can run.

    `module` holds the method's functions for this backend, with one signature per method shared
    by every backend (so the ops never branch on the backend). `devices` are the device types it
    runs on ("*": any); `auto_devices` those `backend="auto"` may choose it for (Triton runs on
    CPU tensors only under the interpreter, which is for tests and never chosen by itself).
    `needs` names what must be present: "triton" (it imports), "extension" (fastpeft._C built) or
    "extension-cuda" (fastpeft._C built with its CUDA kernels). `limits` maps a size the
    dispatcher is given (e.g. "rank") to the largest value this implementation takes.
    """

    backend: str
    module: str
    devices: tuple[str, ...]
    auto_devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES
    needs: str | None = None
    limits: Mapping[str, int] = field(default_factory=dict)
    configs: str | None = None  # "module:function(target, ...)": launch configs per architecture

    def load(self):
        return load(self.module)


@dataclass(frozen=True)
class Method:
    """A method fastpeft accelerates. `implementations` are in the order "auto" prefers them."""

    name: str  # the registry key, the counters' prefix and the bench rows' "kind"
    label: str  # the patch report's word for it
    implementations: tuple[Implementation, ...] = ()
    reference: str | None = None  # the PyTorch reference the tests compare against
    patcher: str | None = None  # the patcher module (see fastpeft/patching/__init__.py)
    peft_layer: str | None = None  # the PEFT layer class the patcher takes over, if any
    bench: str | None = None  # the module with its benchmark cases (fastpeft/bench/cases/)
    compile_check: str | None = None  # "module:function" driving its Triton launches for sm_90
    static: str | None = None  # its static model (fastpeft/static/methods/): GPU-less predictions
    # Backends "auto" times against each other on first use per shape on a GPU (the fastest is
    # kept), with the "module:function" that times them (see fastpeft/dispatch.py).
    raced: tuple[str, ...] = ()
    race: str | None = None

    def implementation(self, backend: str) -> Implementation | None:
        return next((i for i in self.implementations if i.backend == backend), None)

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(i.backend for i in self.implementations)


_ANY_DEVICE = ("*",)  # the PyTorch path runs wherever torch does


def _torch(module: str, dtypes=FLOAT_DTYPES) -> Implementation:
    return Implementation("torch", module, _ANY_DEVICE, _ANY_DEVICE, dtypes)


def _triton(
    module: str, limits=None, configs=None, dtypes=FLOAT_DTYPES, backend: str = "triton"
) -> Implementation:
    return Implementation(
        backend, module, ("cuda", "cpu"), ("cuda",), dtypes, needs="triton",
        limits=dict(limits or {}), configs=configs,
    )  # fmt: skip


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered: {tuple(METHODS)}") from None


# fastpeft's own adapters, in claim order: the gate/up pair (an MLP-level fusion) first.
ADAPTER_METHODS = ("adapter_pair", "adapter")


def patchable() -> tuple[Method, ...]:
    """The methods `patch` applies, in order: the first patcher that claims a module owns it."""
    return tuple(m for m in METHODS.values() if m.patcher is not None)


# ------------------------------------------------------------------------------------------------
# The methods. Registration order is the patch order: the gate/up adapter pair (an MLP-level
# fusion) comes before single adapters so that it claims its two member adapters first.
# ------------------------------------------------------------------------------------------------

register(
    Method(
        name="lora",
        label="LoRA",
        implementations=(
            # The whole rank lives in registers: rank tiles up to 256 wide.
            _triton(
                "fastpeft.triton_path.lora",
                limits={"rank": 256},
                configs="fastpeft.triton_path.lora_plan:launch_configs",
            ),
            # The base products through cuBLAS, the LoRA terms in the same Triton kernels.
            _triton(
                "fastpeft.triton_path.lora_hybrid",
                limits={"rank": 256},
                configs="fastpeft.triton_path.lora_plan:launch_configs",
                backend="hybrid",
            ),
            _torch("fastpeft.torch_path.lora"),
        ),
        raced=("triton", "hybrid"),
        race="fastpeft.triton_path.lora_race:race",
        reference="fastpeft.reference.lora:lora_linear",
        patcher="fastpeft.patching.lora",
        peft_layer="peft.tuners.lora.layer:Linear",
        bench="fastpeft.bench.cases.lora",
        compile_check="fastpeft.triton_path.samples:lora",
        static="fastpeft.static.methods.lora",
    )
)

# Shared-input LoRA: LoRA's siblings on one input (q/k/v, gate/up) sharing one down-projection
# launch. It runs inside LoRA's patcher and implementations (fastpeft/patching/lora_shared.py);
# this entry gives it its own static model and compile check.
register(
    Method(
        name="lora_shared",
        label="shared-input LoRA",
        compile_check="fastpeft.triton_path.samples:lora_shared",
        static="fastpeft.static.methods.lora_shared",
    )
)

register(
    Method(
        name="ia3",
        label="IA3",
        implementations=(
            _triton("fastpeft.triton_path.ia3", configs="fastpeft.triton_path.ia3:launch_configs"),
            # The base products through cuBLAS, the scale and dl in one Triton side kernel.
            _triton(
                "fastpeft.triton_path.ia3_hybrid",
                configs="fastpeft.triton_path.ia3:launch_configs",
                backend="hybrid",
            ),
            _torch("fastpeft.torch_path.ia3"),
        ),
        raced=("triton", "hybrid"),
        race="fastpeft.triton_path.ia3_race:race",
        reference="fastpeft.reference.ia3:ia3_linear",
        patcher="fastpeft.patching.ia3",
        peft_layer="peft.tuners.ia3.layer:Linear",
        bench="fastpeft.bench.cases.ia3",
        compile_check="fastpeft.triton_path.samples:ia3",
        static="fastpeft.static.methods.ia3",
    )
)

register(
    Method(
        name="prefix_positions",
        label="prefix M-RoPE",
        # No kernel: PEFT's prefix path lacks M-RoPE position ids; the patcher supplies them.
        patcher="fastpeft.patching.prefix_positions",
    )
)

_ADAPTER_IMPLEMENTATIONS = (
    _triton(
        "fastpeft.triton_path.adapter",
        limits={"bottleneck": 1024},
        configs="fastpeft.triton_path.adapter:launch_configs",
    ),
    _torch("fastpeft.torch_path.adapter"),
)

register(
    Method(
        name="adapter_pair",
        label="adapter pair",
        implementations=_ADAPTER_IMPLEMENTATIONS,
        reference="fastpeft.reference.adapter:adapter_pair",
        patcher="fastpeft.patching.adapter_pair",
        bench="fastpeft.bench.cases.adapter_pair",
        compile_check="fastpeft.triton_path.samples:adapter_pair",
        static="fastpeft.static.methods.adapter_pair",
    )
)

register(
    Method(
        name="adapter",
        label="adapter",
        implementations=_ADAPTER_IMPLEMENTATIONS,
        reference="fastpeft.reference.adapter:adapter",
        patcher="fastpeft.patching.adapter",
        bench="fastpeft.bench.cases.adapter",
        compile_check="fastpeft.triton_path.samples:adapter",
        static="fastpeft.static.methods.adapter",
    )
)

register(
    Method(
        name="spider",
        label="SPIDER importance",
        implementations=(
            Implementation(
                "cuda",
                "fastpeft.native_path.importance",
                ("cuda",),
                ("cuda",),
                SPIDER_DTYPES,
                needs="extension-cuda",
            ),
            _triton(
                "fastpeft.triton_path.importance",
                configs="fastpeft.triton_path.importance:launch_configs",
            ),
            Implementation(
                "cpp",
                "fastpeft.native_path.importance",
                ("cpu",),
                ("cpu",),
                SPIDER_DTYPES,
                needs="extension",
            ),
            _torch("fastpeft.torch_path.importance", SPIDER_DTYPES),
        ),  # fmt: skip
        reference="fastpeft.reference.spider:SpiderReference",
        bench="fastpeft.bench.cases.spider",
        compile_check="fastpeft.triton_path.samples:spider",
        static="fastpeft.static.methods.spider",
    )
)
