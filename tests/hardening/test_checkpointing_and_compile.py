"""Hardening (CPU tier): fastpeft's fused paths under activation checkpointing and torch.compile.

Checkpointing, reentrant and not, on a tiny LLaVA with PEFT LoRA, PEFT IA3 and fastpeft adapters:
patched gradients equal unpatched ones and the recomputation in backward runs the fused path too.
torch.compile of a whole patched LLaVA with LoRA: patching adds no graph break, the fused op sits
inside the captured graph, a fullgraph aot_eager step equals the eager unpatched one, and a second
compiled step does not recompile.
"""

import pytest
import torch

import fastpeft
from fastpeft import mllm, testing
from fastpeft.ops import _counters

from ..mllm.helpers import fused_calls, perturb_trainable


def _lora(model):
    return testing.make_lora_model(model)  # all language-model linears, B != 0, dropout 0


def _ia3(model):
    from peft import IA3Config, get_peft_model

    config = IA3Config(
        target_modules=mllm.target_modules(model, "ia3"),
        feedforward_modules=mllm.ia3_feedforward_modules(model),
    )
    peft_model = get_peft_model(model, config)
    perturb_trainable(peft_model)  # PEFT starts every vector at 1: move them off the identity
    return peft_model


def _adapters(model):
    config = fastpeft.AdapterConfig(bottleneck_size=8, dropout=0.0)
    model = fastpeft.add_adapters(model, config, fused=False)  # patched below, like the others
    perturb_trainable(model)  # bert init (std 0.02) keeps the adapters too close to identity
    return model


METHODS = {"lora": _lora, "ia3": _ia3, "adapter": _adapters}


def _build(method, patched, **llava_kwargs):
    """The same tiny LLaVA + `method` on every call; patched with backend torch."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)  # adapter inits draw from the global RNG
        model = METHODS[method](testing.tiny_llava(**llava_kwargs))
    report = fastpeft.patch(model, backend="torch") if patched else None
    if patched:
        assert report.patched and not report.skipped
    return model.train(), report  # checkpointing only applies in train mode; dropout is 0


def _enable_checkpointing(model, reentrant):
    kwargs = {"use_reentrant": reentrant}
    # transformers 5 renamed the method (the old name is a deprecated alias); Trainer calls the
    # new one. Either way it also hooks the input embeddings to require grad, which reentrant
    # checkpointing needs to pass gradients back to the adapters inside a checkpointed layer.
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _nonzero_grads(model) -> dict[str, torch.Tensor]:
    return {
        n: p.grad.clone()
        for n, p in model.named_parameters()
        if p.grad is not None and bool(p.grad.ne(0).any())
    }


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# --- activation checkpointing ---------------------------------------------------------------


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
@pytest.mark.parametrize("method", METHODS)
def test_checkpointed_grads_equal_unpatched(method, reentrant):
    fused, _ = _build(method, patched=True)
    plain, _ = _build(method, patched=False)
    batch = testing.llava_batch(fused)
    exact = testing.fp64_forward_backward(plain, batch)  # without checkpointing: same math

    _enable_checkpointing(fused, reentrant)
    out = fused(**batch)
    forward_calls = fused_calls(fused)
    assert forward_calls > 0, "the fused path must have run"
    out.loss.backward()
    # Backward recomputed every checkpointed decoder layer, and the recomputation went through
    # the fused path as well: each fused call happened once more (proof checkpointing was on).
    assert fused_calls(fused) == 2 * forward_calls
    got = _nonzero_grads(fused)

    _enable_checkpointing(plain, reentrant)
    ref = plain(**batch)
    ref.loss.backward()
    want = _nonzero_grads(plain)

    # Every trainable tensor got a gradient on both sides: a reentrant checkpoint whose inputs
    # do not require grad would silently leave the adapters inside it without one.
    assert got.keys() == want.keys() == _trainable(plain)
    testing.assert_all_within_reference_budget(
        {"loss": out.loss.detach(), **{f"grad {n}": g for n, g in got.items()}},
        {"loss": ref.loss.detach(), **{f"grad {n}": g for n, g in want.items()}},
        {"loss": exact["loss"], **{f"grad {n}": exact[f"grad {n}"] for n in want}},
    )


# --- torch.compile --------------------------------------------------------------------------

# One decoder layer and one vision layer: tracing time grows with depth, and one layer already
# puts every patched LoRA linear (q/k/v/o, gate/up/down) into the graph.
SMALL = {"num_layers": 1, "vision_layers": 1}


def _warm_up(model, batch):
    # transformers installs its output-capturing hooks on the first call, under a threading.Lock
    # that dynamo cannot trace (a graph break in transformers, not fastpeft): take it eagerly.
    with torch.no_grad():
        model(**batch)


def _compile_fullgraph(model):
    return torch.compile(model, fullgraph=True, backend="aot_eager")


def _first_line(reason) -> str:
    return reason.reason.strip().splitlines()[0]


def test_explain_patching_adds_no_graph_breaks(fresh_dynamo):
    plain, _ = _build("lora", patched=False, **SMALL)
    fused, report = _build("lora", patched=True, **SMALL)
    batch = testing.llava_batch(plain)

    # Dynamo's default config, as a user would compile: LLaVA itself breaks the graph (Tensor.item
    # in its image-token check, the hook lock on the first call); fastpeft must add nothing.
    want = torch._dynamo.explain(plain)(**batch)
    torch._dynamo.reset()
    got = torch._dynamo.explain(fused)(**batch)

    assert got.graph_break_count <= want.graph_break_count
    assert got.graph_count <= want.graph_count
    assert sorted(map(_first_line, got.break_reasons)) == sorted(
        map(_first_line, want.break_reasons)
    )
    for reason in got.break_reasons:
        assert "fastpeft" not in reason.reason
        assert not any("fastpeft" in frame.filename for frame in reason.user_stack), reason.reason
    # The fused op is inside the captured graphs (not run eagerly between them), once per layer.
    fused_op = torch.ops.fastpeft.lora_linear_fwd.default
    in_graphs = [n for g in got.graphs for n in g.graph.nodes if n.target is fused_op]
    assert len(in_graphs) == len(report.patched) == 7


def _step(model, params_of, batch):
    """`testing.forward_backward` of a compiled `model` whose parameters live in `params_of`."""
    params_of.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    grads = {
        f"grad {n}": p.grad.clone() for n, p in params_of.named_parameters() if p.grad is not None
    }
    return {"logits": out.logits.detach(), "loss": out.loss.detach(), **grads}


def test_fullgraph_compiled_step_equals_eager_unpatched(fresh_dynamo):
    plain, _ = _build("lora", patched=False, **SMALL)
    fused, report = _build("lora", patched=True, **SMALL)
    batch = testing.llava_batch(plain)
    exact = testing.fp64_forward_backward(plain, batch)
    want = testing.forward_backward(plain, batch)

    _warm_up(fused, batch)
    compiled = _compile_fullgraph(fused)
    # capture_scalar_outputs lets LLaVA's own Tensor.item() into the graph; with it the whole
    # model (vision tower, projector, patched language model, loss) is one graph.
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        _counters.reset()
        got = _step(compiled, fused, batch)
    # The compiled forward and its backward ran fastpeft's ops, one launch per patched layer.
    assert _counters.launches["lora_fwd:torch"] == len(report.patched)
    assert _counters.launches["lora_bwd:torch"] == len(report.patched)

    assert {n.removeprefix("grad ") for n in got if n.startswith("grad ")} == _trainable(plain)
    testing.assert_all_within_reference_budget(got, want, exact)


@pytest.mark.parametrize("patched", [False, True], ids=["peft", "fastpeft"])
def test_compiled_training_step_does_not_recompile(patched, fresh_dynamo):
    model, _ = _build("lora", patched=patched, **SMALL)
    batch = testing.llava_batch(model)
    _warm_up(model, batch)
    compiled = _compile_fullgraph(model)
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        compiled(**batch).loss.backward()
        # Nothing the guards look at changes between two identical steps; a recompile per step
        # would cost a full compile each step and, after recompile_limit (8) steps, fail
        # (fullgraph=True) or silently fall back to eager.
        with torch.compiler.set_stance("fail_on_recompile"):
            compiled(**batch).loss.backward()
