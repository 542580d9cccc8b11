"""What the bench suites know of each method: one case module per registry `Method.bench`."""

from ... import registry

# Every case module names its method (KIND: the registry key, its bench rows' "kind") and its
# suite (SUITE: "layers" or "spider"), and provides `cases(device, level)` (what it runs at a
# level) and `proof_targets(parts)` (its entries among the proof suite's verdicts).
# A layers-suite module also provides, for layers.py and proof_layers.py (see layer_case.py):
#   BASELINE, FLOOR   the provider its speedups are against; the one bounding the others, or None
#   SIZE_NAME         what LayerCase.r is called in a case name ("r", "H"; None: not named)
#   PROOF_VARIES      what its proof cases vary, and so name: "weights", "dropout"
#   providers(case, dtype, device, setup) -> {name: module}, with the baseline and, last,
#                     "fastpeft" unpatched (layers.build_providers patches it)
#   cost(case, elem) -> Cost
#   proof_cases(M, scale) -> [(priority, ProofCase)]


def modules(suite: str | None = None) -> list:
    """The case modules of the registry's methods (those in `suite` only, unless None), in
    registry order."""
    found = [registry.load(m.bench) for m in registry.METHODS.values() if m.bench is not None]
    return [module for module in found if suite in (None, module.SUITE)]


def of(kind: str):
    """The case module of the method named `kind` (a bench row's "kind")."""
    return registry.load(registry.get(kind).bench)
