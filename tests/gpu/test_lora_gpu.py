"""GPU tier: the real Triton kernels in bf16 at realistic shapes (skipped without CUDA)."""

import pytest
import torch

import fastpeft
from fastpeft import testing
from fastpeft.ops import _counters

from ..ops.lora_cases import keep_mask, make_inputs, run_op, run_reference

pytestmark = pytest.mark.gpu
NAMES = ("y", "dx", "dA", "dB")


@pytest.mark.parametrize("adapter_dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize(
    "shape", [(8192, 4096, 4096, 16), (1000, 4096, 11008, 128), (77, 4096, 1024, 8)]
)
@pytest.mark.parametrize("p", [0.0, 0.05])
def test_bf16_base_within_budget(adapter_dtype, shape, p):
    inputs = make_inputs(*shape, torch.bfloat16, adapter_dtype, "cuda")
    seed = torch.tensor([3], device="cuda")
    got = run_op(inputs, 2.0, p, "triton", seed)
    keep = keep_mask("triton", seed, shape[:2], p)
    with testing.tf32_disabled():
        ref32 = run_reference(inputs, 2.0, keep, p, dtype=torch.float32)
        same = run_reference(inputs, 2.0, keep, p)
    for name, g, r32, rs in zip(NAMES, got, ref32, same, strict=True):
        assert g.dtype == rs.dtype
        if g.dtype == torch.float32:  # fp32 adapter grads: PEFT computes them in fp32 as well
            testing.assert_close_fp32(g, rs, rtol=1e-3, name=name)
        else:
            testing.assert_within_dtype_budget(g, r32, rs, name=name)


def test_m_times_k_beyond_int32():
    # 2**31 + elements in x: offsets must be 64-bit.
    M, K, N, R = 524_800, 4096, 64, 16
    inputs = make_inputs(M, K, N, R, torch.bfloat16, torch.bfloat16, "cuda")
    got = run_op(inputs, 1.0, 0.1, "triton", torch.tensor([9], device="cuda"))
    assert all(torch.isfinite(g).all() for g in got)
    assert got[1][-1].abs().sum() > 0, "last rows of dx must be written"


@pytest.mark.parametrize("autocast_adapter_dtype", [True, False])
def test_bf16_llava_patched_matches_peft(autocast_adapter_dtype):
    model = testing.make_lora_model(
        testing.tiny_llava(hidden_size=256, dtype=torch.bfloat16).cuda(),
        autocast_adapter_dtype=autocast_adapter_dtype,
    )
    batch = testing.llava_batch(model, seq_len=64)
    model.zero_grad()
    want = model(**batch)
    want.loss.backward()
    want_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    report = fastpeft.patch(model)
    assert report.backend == "triton" and not report.skipped
    model.zero_grad()
    _counters.reset()
    got = model(**batch)
    got.loss.backward()
    assert _counters.launches["lora_fwd:triton"] == len(report.patched)
    assert abs(got.loss.item() - want.loss.item()) < 2e-2 * abs(want.loss.item())
    for n, g in want_grads.items():
        p = dict(model.named_parameters())[n]
        rel = (p.grad.float() - g.float()).norm() / g.float().norm()
        assert rel < 5e-2, f"{n}: relative grad error {rel:.3e}"
