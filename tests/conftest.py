"""Test tiers: the CPU tier always runs (Triton through its interpreter); `gpu` tests need CUDA."""

import os

import pytest
import torch

# Triton decides at kernel-definition time whether to interpret, so this must happen before any
# fastpeft kernel module is imported. On a GPU machine the real kernels run.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The CPU rule (fastpeft/patching/cpu_rule.py) picks PEFT's forward where a timing says it is
# faster; tests that check the fused path ran must not depend on timings. Its own tests turn it
# on (tests/patching/test_cpu_rule.py).
os.environ.setdefault("FASTPEFT_CPU_RULE", "off")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        # A lent GPU's time runs out: the kernel checks first, the slow ones (30-step training
        # runs, tens of seconds each) last, so a budget cut stops the least informative tests.
        items.sort(key=lambda item: "slow" in item.keywords)  # stable: file order otherwise
        return
    skip = pytest.mark.skip(reason="GPU tier: needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device() -> torch.device:
    """Where kernel tests run: the GPU when there is one, else the CPU (Triton interpreted)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
