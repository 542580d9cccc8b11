"""DeepSpeed ZeRO-3 and the fused forwards: the weights they read are gathered by their module.

ZeRO-3 keeps every parameter partitioned across the ranks (the local tensor is empty, the full
shape is kept as ``ds_shape``) and gathers a module's own parameters in that module's forward and
backward hooks. A fused LoRA, IA3 or adapter forward reads its children's weights
(``base_layer.weight``, ``lora_A[name].weight``, ``down.weight``, ...) without calling the
children, so their hooks never run. DeepSpeed's public answer for a parameter used outside its
owning module's forward is ``deepspeed.zero.register_external_parameter(module, param)``: then
``module``'s own hooks gather and release ``param``.

`patch` registers them for modules whose parameters are ZeRO-3 ones already (``ds_id``):
patched after ``deepspeed.initialize`` (FastPeftCallback in a Trainer under ZeRO-3) or built
under ``deepspeed.zero.Init``. DeepSpeed is imported then, and nobody else pays for it: neither
the ~2 s import (measured on a 2-core VM) nor DeepSpeed's bookkeeping on the modules (a CPU
Trainer run imports deepspeed without using it). A DeepSpeed without the API fails at
``patch()``, not mid-forward.

Patched before ``deepspeed.initialize``, the weights are plain until then, and DeepSpeed's own
"automatic external parameter discovery" registers them: inside the engine's forward a
partitioned parameter read from any module is gathered on access and registered with the module
running (tested with DeepSpeed 0.19.8). Only a submodule called directly (``model.base_model
.model(...)``, ``generate``) before the engine's first forward then finds them empty ("weight
must be 2-D [N, K], got shape (0,)"); ``fastpeft.patch`` again after ``initialize`` (patching is
idempotent) registers them. The registrations stay after ``unpatch``, as DeepSpeed's own would:
PEFT's forward then gathers the same weights through the children's hooks as well, harmlessly.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn as nn

from ..versions import DEEPSPEED_TESTED


def shape_of(t: torch.Tensor) -> torch.Size:
    """The tensor's full shape: a ZeRO-3 parameter outside its module's forward holds an empty
    local partition and keeps its shape as ``ds_shape``; any other tensor is itself."""
    shape = t.shape
    if len(shape) == 1 and shape[0] == 0:  # only then can it be a partition (no getattr per call)
        return torch.Size(getattr(t, "ds_shape", shape))
    return shape


def numel_of(t: torch.Tensor) -> int:
    return shape_of(t).numel()


def _register_api():
    """DeepSpeed's ``register_external_parameter``, or a RuntimeError saying why it is missing."""
    try:
        # `deepspeed.zero` is an attribute of the package (deepspeed.runtime.zero), not a module.
        register = importlib.import_module("deepspeed").zero.register_external_parameter
    except (ImportError, AttributeError) as error:
        raise RuntimeError(
            "fastpeft.patch: the model has DeepSpeed ZeRO-3 parameters, but "
            f"deepspeed.zero.register_external_parameter is not available ({error}). The fused "
            "layers read their children's weights, which ZeRO-3 gathers for them only once "
            "registered with them. fastpeft was tested with DeepSpeed "
            f"{DEEPSPEED_TESTED}; install that release."
        ) from error
    if not callable(register):
        raise RuntimeError(
            "fastpeft.patch: deepspeed.zero.register_external_parameter is not callable in this "
            f"DeepSpeed; fastpeft was tested with DeepSpeed {DEEPSPEED_TESTED}"
        )
    return register


def is_partitioned(p: torch.Tensor) -> bool:
    """True for a ZeRO-3 parameter (DeepSpeed gives each one a ``ds_id``)."""
    return hasattr(p, "ds_id")


def register_child_parameters(modules: list[nn.Module]) -> int:
    """Register every ZeRO-3 parameter below each module (not its own, which ZeRO-3 gathers
    anyway) as an external parameter of that module, so ZeRO-3 gathers them around the module's
    fused forward and backward. Returns how many were registered (0 without ZeRO-3)."""
    pairs = [
        (module, param)
        for module in modules
        for param in _child_parameters(module)
        if is_partitioned(param)
    ]
    if not pairs:
        return 0
    register = _register_api()
    for module, param in pairs:
        register(module, param)
    return len(pairs)


def _child_parameters(module: nn.Module) -> list[torch.Tensor]:
    own = {id(p) for p in module.parameters(recurse=False)}
    return [p for p in module.parameters() if id(p) not in own]
