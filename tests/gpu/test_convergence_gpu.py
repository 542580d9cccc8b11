"""GPU tier: the convergence check of tests/hardening in bf16 on the Triton kernels (fp32
adapters, PEFT's default): 30 AdamW steps patched vs unpatched; fastpeft's losses are within the
budget of PEFT's bf16 losses against an fp64 run, and the runs learn."""

import pytest
import torch

from fastpeft.testing import assert_within_reference_budget

from ..hardening.test_convergence import run_steps

pytestmark = [pytest.mark.gpu, pytest.mark.slow]  # slow: the GPU tier runs these last


@pytest.mark.parametrize("method", ["lora", "ia3", "adapter", "prefix", "spider"])
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_bf16_thirty_steps_patched_follow_unpatched(family, method):
    fused = run_steps(family, method, True, "cuda", torch.bfloat16)
    plain = run_steps(family, method, False, "cuda", torch.bfloat16)
    exact = run_steps(family, method, False, "cuda", torch.bfloat16, fp64=True)
    if method != "prefix" or family == "qwen2_vl":
        assert fused.fused_calls > 0
    assert min(exact.losses[-4:]) < exact.losses[0] - 0.05, f"no learning: {exact.losses}"
    assert_within_reference_budget(fused.losses, plain.losses, exact.losses, name="bf16 losses")
