"""GPU tier: the convergence check of tests/hardening in bf16 on the Triton kernels (fp32
adapters, PEFT's default): 30 AdamW steps patched vs unpatched stay together within bf16's
budget, and both learn."""

import pytest
import torch

from ..hardening.test_convergence import run_steps

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("method", ["lora", "ia3", "adapter", "prefix", "spider"])
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_bf16_thirty_steps_patched_follow_unpatched(family, method):
    fused, _, calls, _ = run_steps(family, method, True, "cuda", torch.bfloat16)
    ref, _, _, _ = run_steps(family, method, False, "cuda", torch.bfloat16)
    if method != "prefix" or family == "qwen2_vl":
        assert calls > 0
    assert min(ref[-4:]) < ref[0] - 0.05, f"no learning: {ref}"
    worst = max(abs(a - b) / abs(b) for a, b in zip(fused, ref, strict=True))
    assert worst < 2e-2, f"bf16 per-step losses drift apart: {worst:.2e}"
