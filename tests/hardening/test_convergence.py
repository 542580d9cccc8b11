"""Convergence: 30 AdamW steps of every method (Paper A's settings) on tiny LLaVA and Qwen2-VL,
patched vs unpatched, judged against a third run: unpatched PEFT in fp64. fastpeft's losses,
first-step gradients and trained parameters are at most a small multiple further from that
reference than PEFT's own fp32 run is (an error budget, so the bound moves with the machine's
rounding instead of being tuned on one). The loss must go down, so the runs trained, not idled.
SPIDER runs on top of LoRA. Dropout is off (eval mode): PEFT and fastpeft draw their masks from
different streams."""

from dataclasses import dataclass

import pytest
import torch

import fastpeft
from fastpeft import mllm
from fastpeft.testing import (
    REFERENCE_ERROR_FACTOR,
    assert_all_within_reference_budget,
    assert_within_reference_budget,
    fp64_batch,
)

from ..mllm.helpers import FAMILY_BUILDERS, fused_calls, mrope_reference_kwargs, perturb_trainable

STEPS = 30
LR = 2e-3  # larger than Paper A's so 30 steps on random weights move the loss clearly


@dataclass
class Run:
    losses: torch.Tensor  # [STEPS], in the run's dtype
    params: dict[str, torch.Tensor]  # trained parameters after the last step
    travelled: dict[str, float]  # per parameter: |w_T − w_0| summed over elements
    first_grads: dict[str, torch.Tensor]
    fused_calls: int
    selected: dict[str, float]  # SPIDER only: fraction of elements with c > 0 at the end


def run_steps(
    family: str,
    method: str,
    patched: bool,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    fp64: bool = False,
) -> Run:
    """STEPS AdamW steps of `method` (Paper A's setup, dropout off). On a CPU the torch backend
    runs; on CUDA Triton. `fp64=True` converts the unpatched setup to fp64 after it is built in
    `dtype`, so all three runs start from the same values."""
    build, make_batch = FAMILY_BUILDERS[family]
    model = build(dtype=dtype).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        setup = mllm.paper_setup(
            model,
            "lora" if method == "spider" else method,
            connector=True,
            backend="torch" if device == "cpu" else "auto",
        )
    if not patched:
        fastpeft.unpatch(setup.model)
    perturb_trainable(setup.model)
    if fp64:
        setup.model.to(torch.float64)
    setup.model.eval()
    setup.lr = setup.connector_lr = LR
    optimizer = setup.optimizer()
    spider = fastpeft.Spider(setup.model) if method == "spider" else None
    trainable = {n: p for n, p in setup.model.named_parameters() if p.requires_grad}
    start = {n: p.detach().clone() for n, p in trainable.items()}
    batches = [make_batch(model, seed=i) for i in range(4)]
    losses, first_grads = [], {}
    for step in range(STEPS):
        batch = batches[step % len(batches)]
        extra = {} if patched or method != "prefix" else mrope_reference_kwargs(model, batch)
        loss = setup.model(**(fp64_batch(batch) if fp64 else batch), **extra).loss
        loss.backward()
        if step == 0:
            first_grads = {n: p.grad.clone() for n, p in trainable.items() if p.grad is not None}
        optimizer.step()
        if spider is not None:
            spider.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return Run(
        losses=torch.stack(losses),
        params={n: p.detach().clone() for n, p in trainable.items()},
        travelled={n: float((p.detach() - start[n]).abs().sum()) for n, p in trainable.items()},
        first_grads=first_grads,
        fused_calls=fused_calls(setup.model) if patched else 0,
        selected={n: s["selected"] for n, s in spider.stats().items()} if spider else {},
    )


@pytest.mark.parametrize("method", ["lora", "ia3", "adapter", "prefix", "spider"])
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_thirty_steps_patched_follow_unpatched(family, method):
    fused = run_steps(family, method, patched=True)
    plain = run_steps(family, method, patched=False)
    exact = run_steps(family, method, patched=False, fp64=True)
    if method != "prefix" or family == "qwen2_vl":
        assert fused.fused_calls > 0, "the fused path must have run"
    assert min(exact.losses[-4:]) < exact.losses[0] - 0.05, f"no learning: {exact.losses}"
    # Adam is blind to a gradient's scale, so a kernel off by a constant factor would converge
    # like the reference: the first step's gradients are judged directly.
    assert fused.first_grads
    assert_all_within_reference_budget(
        fused.first_grads, plain.first_grads, exact.first_grads, what="first-step grad"
    )
    assert_within_reference_budget(fused.losses, plain.losses, exact.losses, name="losses")
    if method == "spider":
        _assert_spider_runs_agree(fused, plain, exact)
    else:
        assert_all_within_reference_budget(
            fused.params, plain.params, exact.params, what="param", norm="rms"
        )


def _assert_spider_runs_agree(fused: Run, plain: Run, exact: Run) -> None:
    """SPIDER's per-element selection is a threshold, so a last-bit gradient difference flips
    single elements between kept and reset, and trained parameters part element by element in
    any two runs (fp32 vs fp64 included). What is stable is judged instead, each within the
    budget of PEFT's fp32 run against fp64: the loss curve (above), per tensor the fraction of
    elements selected and the distance travelled."""
    names = sorted(exact.selected)
    assert names and sorted(fused.selected) == names
    selected = {
        run: torch.tensor([r.selected[n] for n in names], dtype=torch.float64)
        for run, r in (("fused", fused), ("plain", plain), ("exact", exact))
    }
    assert bool((selected["exact"] > 0).any()), "SPIDER selected nothing: the test proves nothing"
    # A fraction is a count over the tensor: one flipped element moves it by 1/numel, so the
    # floor of the budget is a few flips (the smallest tensor's 1/numel, times 8).
    smallest = min(fused.params[n].numel() for n in names)
    _assert_vector_within_budget(selected, floor=8 / smallest, what="selected fraction")
    travelled = {
        run: torch.tensor([r.travelled[n] for n in names], dtype=torch.float64)
        for run, r in (("fused", fused), ("plain", plain), ("exact", exact))
    }
    _assert_vector_within_budget(travelled, floor=0.0, what="distance travelled")


def _assert_vector_within_budget(values: dict, floor: float, what: str) -> None:
    err = (values["fused"] - values["exact"]).abs().max()
    baseline = (values["plain"] - values["exact"]).abs().max()
    budget = REFERENCE_ERROR_FACTOR * baseline + floor
    assert err <= budget, f"{what}: error {float(err):.3e} > budget {float(budget):.3e}"
