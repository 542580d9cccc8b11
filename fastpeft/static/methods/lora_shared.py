"""Shared-input LoRA's static model: the sibling LoRA layers of one attention (q/k/v) or MLP
(gate/up) on the same input, with their down-projections from one launch that reads x once
("shared"), against the same layers each on its own ("unshared"), the frozen base linears and
PEFT. The rows' `fused_dram_bytes` show the bytes sharing saves; their times, what the model
makes of them.
"""

from dataclasses import dataclass

from ...bench.cases.layer_case import HIDDEN, INTERMEDIATE, LayerCase
from .. import sequences as seq
from . import lora
from ._meta import BASE_DTYPE, DTYPES, meta, seeds

M_TOKENS, GQA_KV = 8192, 1024  # the bench's tokens; Llama-3-8B-style k/v width (8 of 32 heads)

# Paper A's dropout, in PEFT's fp32 adapters and in 16-bit ones, each shared and unshared; and
# the shared launches without dropout (the model's issue time needs each kernel's no-dropout twin).
VARIANTS = [(f"{w}{path}", 0.05) for w in ("bfloat16", "float32") for path in ("", " unshared")]
VARIANTS += [("bfloat16", 0.0), ("float32", 0.0)]


@dataclass(frozen=True)
class SharedCase:
    """Sibling projections of one input: x [M, K], each member's W [N_g, K], one rank."""

    label: str
    M: int
    K: int
    widths: tuple[int, ...]
    r: int

    def name(self) -> str:
        outs = "+".join(str(n) for n in self.widths)
        return f"lora_shared {self.label} M={self.M} {self.K}->{outs} r={self.r}"

    def fields(self) -> dict:
        return {"M": self.M, "K": self.K, "N": list(self.widths), "r": self.r}

    def members(self) -> list[LayerCase]:
        return [LayerCase("lora", self.label, self.M, self.K, n, self.r) for n in self.widths]


def cases() -> list[SharedCase]:
    """GQA q/k/v first (the LoRA shape whose down-projection weighs most: the quick run's), then
    Llama-7B's q/k/v and gate/up."""
    d, ff = HIDDEN, INTERMEDIATE
    return [
        SharedCase("q/k/v GQA", M_TOKENS, d, (d, GQA_KV, GQA_KV), 16),
        SharedCase("q/k/v", M_TOKENS, d, (d, d, d), 16),
        SharedCase("gate/up", M_TOKENS, d, (ff, ff), 16),
    ]


def fields(weights: str) -> dict:
    name, *flags = weights.split()
    return {"adapter_dtype": name, "path": "unshared" if "unshared" in flags else "shared"}


def launches(case: SharedCase, weights: str, dropout: float) -> None:
    from ...triton_path import lora as host

    f = fields(weights)
    A = DTYPES[f["adapter_dtype"]]
    M, K, R = case.M, case.K, case.r
    x = meta(M, K)
    members = [(meta(n, K), meta(R, K, dtype=A), meta(n, R, dtype=A), meta(M, n), seeds(1, dropout))
               for n in case.widths]  # fmt: skip
    if f["path"] == "unshared":
        for w, a, b, dy, seed in members:
            _, t, keep = host.forward(x, w, None, a, b, seed, 2.0, dropout)
            host.backward(dy, x, w, a, b, t, keep, seed, 2.0, dropout, True)
        return
    seed_list = [seed for *_, seed in members] if dropout > 0 else []
    t, keep = host.shared_down(x, [a for _, a, *_ in members], seed_list, dropout)
    for g, (w, a, b, dy, seed) in enumerate(members):
        mask = keep[g] if keep.dim() == 3 else keep
        host.forward_up(x, w, None, b, t[:, g], 2.0)
        host.backward(dy, x, w, a, b, t[:, g], mask, seed, 2.0, dropout, True)


def references(case: SharedCase, weights: str, dropout: float) -> dict[str, list[seq.Op]]:
    """The members' frozen base linears, and their PEFT layers, each on its own."""
    adapter = fields(weights)["adapter_dtype"]
    base, peft = [], []
    for member in case.members():
        forward, backward = seq.base_linear(member.M, member.K, member.N, BASE_DTYPE)
        base += forward + backward
        peft += lora.references(member, adapter, dropout)["peft"]
    return {"base": base, "peft": peft}


def targets(row: dict) -> list:
    return []  # no issue target of its own: the rows show what sharing saves
