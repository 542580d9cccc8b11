"""Assertions the op tests share across methods and tiers: compiled against eager, and 16-bit runs
against the references within their error budgets."""

import torch

from fastpeft.ops import _counters
from fastpeft.testing import assert_close_fp32, assert_within_dtype_budget


def check_compiled_matches_eager(step, inputs, compiler, names, launches):
    """`step(*leaves)` returns a scalar loss; run it eagerly and as
    ``torch.compile(step, fullgraph=True, backend=compiler)``, each on fresh leaf copies of
    `inputs`. The compiled run launches exactly `launches` (counter name -> count, so a graph
    break or a decomposed op shows), and its loss and every leaf's gradient (`names`, loss first)
    match eager to rtol 1e-5."""
    torch._dynamo.reset()  # no graphs or recompile budget carried over from earlier tests

    def grads(fn):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        loss = fn(*leaves)
        loss.backward()
        return loss.detach(), *(t.grad for t in leaves)

    eager = grads(step)
    _counters.reset()
    compiled = grads(torch.compile(step, fullgraph=True, backend=compiler))
    for counter, count in launches.items():
        assert _counters.launches[counter] == count, counter
    for name, c, e in zip(names, compiled, eager, strict=True):
        assert_close_fp32(c, e, rtol=1e-5, name=name)


def check_within_budget(got, ref32, ref_same, names, fp32_rtol, label=""):
    """Each output of a 16-bit run (`got`) against the reference in fp32 (`ref32`) and in the
    run's own dtypes (`ref_same`): a 16-bit output within the dtype budget of
    docs/methods.md#numerics; an fp32 one (the grad of an fp32 adapter weight, which the reference
    computes in fp32 as well) close to `ref_same` within `fp32_rtol`. Where the reference has no
    such output (None), the run must have none either."""
    for name, g, r32, rs in zip(names, got, ref32, ref_same, strict=True):
        name = f"{label} {name}" if label else name
        if rs is None:
            assert g is None, name
            continue
        assert g.dtype == rs.dtype, f"{name}: dtype {g.dtype} != {rs.dtype}"
        if g.dtype == torch.float32:
            assert_close_fp32(g, rs, rtol=fp32_rtol, name=name)
        else:
            assert_within_dtype_budget(g, r32, rs, name=name)
