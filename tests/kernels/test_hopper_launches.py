"""The registry's compile_check drivers, recorded for Hopper in-process: no compiler needed.

A fast guard for what the slow sm_90 compile check (test_compile_sm90.py) relies on: every
registered method's driver runs on meta tensors under `launch.recording(launch.HOPPER, ...)`, the
host code really configures for the GPU (no launch carries the interpreter's UPCAST), and
together the drivers launch every `*_kernel` of fastpeft.kernels. Recording never runs a kernel,
so Triton's interpreter (on in this process, see conftest.py) does not change what is recorded.
"""

import pytest
import torch

from fastpeft.triton_path import launch

from .hopper_launches import checked_methods, kernel_key, not_launched, record

METHODS = {m.name: m for m in checked_methods()}


@pytest.mark.parametrize("full", [False, True], ids=["subset", "all"])
@pytest.mark.parametrize("name", list(METHODS))
def test_driver_records_hopper_launches(name, full):
    launches = record(METHODS[name], full)
    assert launches, f"{name}'s compile_check driver made no launch"
    assert all(x.case for x in launches), "a launch made outside the driver's tag(case)"
    for x in launches:
        where = f"{kernel_key(x.kernel)[1]} [{x.case}]"
        assert x.kwargs.get("UPCAST") is not True, f"{where}: configured for the interpreter"
        if "UPCAST" in x.kernel.arg_names:
            assert x.kwargs.get("UPCAST") is False, f"{where}: no UPCAST=False for the GPU's dots"
    # Recording is scoped: afterwards, CPU tensors are configured for the interpreter again.
    assert launch.target_for(torch.device("cpu")) == launch.INTERPRETER


def test_every_kernel_is_launched_by_some_method():
    launches = [x for m in METHODS.values() for x in record(m, full=False)]
    assert not_launched(launches) == {}, "kernels no registered method's driver launches"
