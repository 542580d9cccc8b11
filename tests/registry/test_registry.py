"""The method registry is complete: every method declares each part, and each part loads."""

import inspect

import pytest
import torch

from fastpeft import dispatch, registry
from fastpeft.triton_path import launch

KERNEL_METHODS = [m for m in registry.METHODS.values() if m.implementations]
# The functions every backend of a method provides, with one signature per method.
INTERFACES = {
    "lora": ("forward", "backward", "mask_spec", "keep_mask"),
    "ia3": ("forward", "backward"),
    "adapter": ("forward", "backward", "forward_pair", "backward_pair", "mask_spec"),
    "adapter_pair": ("forward", "backward", "forward_pair", "backward_pair", "mask_spec"),
    "spider": ("Plan",),
}


def test_the_methods_the_issue_names_are_registered():
    assert set(INTERFACES) <= set(registry.METHODS)
    assert {m.name for m in KERNEL_METHODS} == set(INTERFACES)


@pytest.mark.parametrize("method", KERNEL_METHODS, ids=lambda m: m.name)
def test_every_kernel_method_has_a_reference_a_bench_case_a_compile_check_and_a_model(method):
    assert callable(registry.load(method.reference)), method.reference
    assert method.bench is not None and registry.load(method.bench) is not None
    if method.implementation("triton") is not None:
        assert method.compile_check is not None, f"{method.name}: Triton code nobody compiles"
        assert callable(registry.load(method.compile_check))
        assert method.static is not None, f"{method.name}: Triton code the static model skips"
        assert registry.load(method.static).VARIANTS


@pytest.mark.parametrize(
    "method", [m for m in registry.METHODS.values() if m.patcher], ids=lambda m: m.name
)
def test_every_patcher_loads_with_the_patcher_interface(method):
    patcher = registry.load(method.patcher)
    assert callable(patcher.candidates) and callable(patcher.ineligibility_reasons)
    assert callable(getattr(patcher, "fused_forward", None) or patcher.forward_for)


@pytest.mark.parametrize(
    "method", [m for m in registry.METHODS.values() if m.peft_layer], ids=lambda m: m.name
)
def test_a_method_with_a_peft_layer_has_a_patcher_that_finds_it(method):
    layer_class = registry.load(method.peft_layer)
    patcher = registry.load(method.patcher)
    assert inspect.isclass(layer_class)
    # The patcher's own view of PEFT's layer type is the registry's.
    types = getattr(patcher, f"{method.name}_layer_types")()
    assert layer_class in types


@pytest.mark.parametrize(
    "method, impl",
    [(m, i) for m in KERNEL_METHODS for i in m.implementations],
    ids=lambda v: v.name if isinstance(v, registry.Method) else v.backend,
)
def test_every_implementation_has_its_method_interface(method, impl):
    assert impl.backend in dispatch.BACKENDS[1:]
    module = impl.load()
    missing = [name for name in INTERFACES[method.name] if not hasattr(module, name)]
    assert not missing, f"{impl.module} lacks {missing}"


@pytest.mark.parametrize(
    "method", [m for m in KERNEL_METHODS if m.implementation("triton")], ids=lambda m: m.name
)
def test_triton_configs_are_a_function_of_the_target(method):
    configs = registry.load(method.implementation("triton").configs or "")
    params = list(inspect.signature(configs).parameters)
    assert params[0] == "target"
    extra = {
        "lora": (torch.bfloat16, torch.float32, 128),
        "ia3": (torch.float32,),
        "adapter": (torch.bfloat16,),
        "adapter_pair": (torch.bfloat16,),
        "spider": (),
    }[method.name]
    hopper, interpreter = configs(launch.HOPPER, *extra), configs(launch.INTERPRETER, *extra)
    assert hopper != interpreter  # GPU tiles differ from the interpreter's small ones
    assert "UPCAST" not in str(hopper) or "'UPCAST': False" in str(hopper)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.Method(name="lora", label="again"))


def test_unknown_method_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown method 'dora'.*'lora'"):
        registry.get("dora")
