"""The end-to-end GPU check every PEFT method runs: a patched bf16 tiny LLaVA against PEFT."""

import torch

import fastpeft
from fastpeft import testing
from fastpeft.ops import _counters


def check_bf16_llava_patched_matches_peft(wrap, launches, autocast: bool = False):
    """`wrap` (a PEFT method's get_peft_model) a bf16 tiny LLaVA on the GPU; patch it with the
    automatic backend (Triton here) and redo one forward/backward: every counter in `launches`
    counts one launch per patched module, the loss is PEFT's within 2 % and each trainable
    gradient within 5 % in relative norm (bf16 rounding, not the kernels, sets these). With
    `autocast`, both runs are under bf16 CUDA autocast (the Trainer's bf16=True). Returns the
    patch report."""
    model = wrap(testing.tiny_llava(hidden_size=256, dtype=torch.bfloat16).cuda())
    batch = testing.llava_batch(model, seq_len=64)
    mixed = torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast)
    model.zero_grad()
    with mixed:
        want = model(**batch)
    want.loss.backward()
    want_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    report = fastpeft.patch(model)
    assert report.backend == "triton" and not report.skipped
    model.zero_grad()
    _counters.reset()
    with mixed:
        got = model(**batch)
    got.loss.backward()
    for counter in launches:
        assert _counters.launches[counter] == len(report.patched), counter
    assert abs(got.loss.item() - want.loss.item()) < 2e-2 * abs(want.loss.item())
    for n, g in want_grads.items():
        p = dict(model.named_parameters())[n]
        rel = (p.grad.float() - g.float()).norm() / g.float().norm()
        assert rel < 5e-2, f"{n}: relative grad error {rel:.3e}"
    return report
