"""Shared-input LoRA: sibling LoRA layers that see the same input (q/k/v of an attention, gate/up
of an MLP) get their down-projections from one kernel that reads x once.

`link` groups a module's patched LoRA children by the sibling names models use (`SIBLINGS`).
A group never assumes that its members see the same tensor: cross-attention feeds k/v another
input than q, and some models call them out of order. It learns it instead, per input:

- the first member called with a new input leads: it computes its own down-projection and
  those of the members that were seen on its input before (its learned followers), in one
  launch, and parks each follower's share (t, mask, seed) until that follower is called;
- a member called on the leader's input (the same tensor object, unmodified: its version
  counter has not moved) uses its parked share, or, the first time, runs on its own and is
  learned as a follower of that leader;
- a parked share that meets another input (or another adapter, dropout rate or backend) is
  dropped, and its member is no longer a follower: nothing wrong is ever used, and at worst one
  down-projection is wasted once.

So the first forward of a model runs unshared and every later one shares. Each follower's dropout
mask comes from its own seed, drawn in member order at the leader's call: the masks stay
independent, as PEFT's one dropout module per layer draws them, and equal to the unshared path's
whenever nothing draws from torch's generator between the siblings' calls. Only the Triton path
(backends "triton" and "hybrid") has the shared kernel; under torch.compile, for inference
tensors (no version counter) and with FASTPEFT_SHARED_INPUT=off each layer runs on its own.
"""

import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from .. import env, functional
from . import base

# Child names whose modules see one input in the model families fastpeft patches: Llama-style
# attention and MLPs (Llama, Qwen2/2.5-VL's language model, Mistral, ...) and CLIP/SigLIP towers
# (q/k/v_proj), BERT/ViT-style towers (query/key/value). Lists of at most three (the kernel's).
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("query", "key", "value"))


@dataclass(frozen=True)
class Adapter:
    """What a LoRA layer's fused call computes with, read from the module for one call."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    lora_a: torch.Tensor
    lora_b: torch.Tensor
    scaling: float | torch.Tensor
    dropout_p: float


@dataclass(frozen=True)
class Calls:
    """The LoRA patcher's functions a group calls: the module's `Adapter`, its own unshared
    fused call, and why a call must take PEFT's forward instead (None: it may fuse)."""

    adapter: Callable[[nn.Module], Adapter]
    alone: Callable[[nn.Module, torch.Tensor, str], torch.Tensor]
    fallback_reason: Callable[[nn.Module, torch.Tensor], str | None]


@dataclass
class _Parked:
    """A follower's share, computed at its leader's call, waiting for the follower's own call."""

    x: weakref.ref
    version: int
    leader: int  # the leader's index in the group
    lora_a: torch.Tensor
    dropout_p: float
    down: functional.SharedDown

    def fits(self, x: torch.Tensor, adapter: Adapter) -> bool:
        return (
            self.x() is x
            and x._version == self.version
            and adapter.lora_a is self.lora_a
            and adapter.dropout_p == self.dropout_p
        )


def usable(x: torch.Tensor) -> bool:
    """Whether a call on x may share at all (eager, a tensor with a version counter, not off)."""
    return not torch.compiler.is_compiling() and not x.is_inference() and env.shared_input()


class SharedInputGroup:
    """Two or three patched LoRA siblings that may share their down-projection (module docs)."""

    def __init__(self, members: list[nn.Module], calls: Calls):
        self.members = members
        self._calls = calls
        self._followers: dict[int, set[int]] = {}  # leader index -> follower indices
        self._parked: dict[int, _Parked] = {}  # follower index -> its share
        self._last: tuple[weakref.ref, int, int] | None = None  # (x, version, leader index)
        self.shared_calls: Counter[int] = Counter()  # member index -> calls from a shared launch

    def forward(self, member: nn.Module, x: torch.Tensor, backend: str) -> torch.Tensor:
        """The fused forward of `member` for input x: from a parked share, or leading a new
        input (and computing its followers' shares), or on its own."""
        index = self.index(member)
        adapter = self._calls.adapter(member)
        parked = self._parked.pop(index, None)
        if parked is not None:
            if parked.fits(x, adapter):
                return self._up(member, index, x, adapter, parked.down)
            self._followers.get(parked.leader, set()).discard(index)  # it sees another input
        last = self._last
        if last is not None and last[0]() is x and last[1] == x._version and last[2] != index:
            self._followers.setdefault(last[2], set()).add(index)  # it sees its leader's input
            return self._calls.alone(member, x, backend)
        # A new input, or the leader called again (the next forward on the same tensor).
        return self._lead(member, index, x, adapter, backend)

    def index(self, member: nn.Module) -> int:
        return next(i for i, m in enumerate(self.members) if m is member)

    def _lead(self, member, index: int, x, adapter: Adapter, backend: str) -> torch.Tensor:
        self._parked.clear()
        self._last = (weakref.ref(x), x._version, index)
        learned = sorted(self._followers.get(index, ()))
        # Nothing to share (no follower learned yet), or a backend without the shared kernel:
        # the call runs alone, and the followers' adapters are not even read.
        resolved = _shared_backend(x, adapter, backend) if learned else None
        followers = [] if resolved is None else [
            (i, self.members[i], self._calls.adapter(self.members[i])) for i in learned
        ]  # fmt: skip
        followers = [f for f in followers if self._joins(f[1], f[2], x, adapter)]
        if not followers:
            return self._calls.alone(member, x, backend)
        lora_as = [adapter.lora_a] + [a.lora_a for _, _, a in followers]
        downs = functional.lora_shared_down(x, lora_as, adapter.dropout_p, backend=resolved)
        for (i, _, a), down in zip(followers, downs[1:], strict=True):
            self._parked[i] = _Parked(weakref.ref(x), x._version, index, a.lora_a,
                                      a.dropout_p, down)  # fmt: skip
        return self._up(member, index, x, adapter, downs[0])

    def _joins(self, follower: nn.Module, adapter: Adapter, x, leader: Adapter) -> bool:
        """Whether `follower` can take a share of the leader's launch on x now: still in this
        group, fused on this call, an A of the leader's shape, dtype and layout, the same
        dropout rate, and a backend with the shared kernel."""
        a, lead = adapter.lora_a, leader.lora_a
        return (
            base.is_patched(follower)
            and base.state_of(follower).shared is self
            and self._calls.fallback_reason(follower, x) is None
            and (a.shape, a.dtype, a.stride()) == (lead.shape, lead.dtype, lead.stride())
            and adapter.dropout_p == leader.dropout_p
            and _shared_backend(x, adapter, base.state_of(follower).backend) is not None
        )

    def _up(self, member, index: int, x, adapter: Adapter, down) -> torch.Tensor:
        self.shared_calls[index] += 1
        return functional.lora_linear_up(
            x, adapter.weight, adapter.bias, adapter.lora_a, adapter.lora_b, adapter.scaling,
            adapter.dropout_p, down, backend=base.state_of(member).backend,
        )  # fmt: skip


def _shared_backend(x: torch.Tensor, adapter: Adapter, backend: str) -> str | None:
    """The backend a member's call resolves to, if it has the shared kernel, else None."""
    resolved = functional.lora_backend(
        x, adapter.weight, adapter.lora_a, adapter.dropout_p, backend
    )
    return resolved if resolved in functional.SHARED_INPUT_BACKENDS else None


def link(model: nn.Module, method: str, calls: Calls) -> list[list[str]]:
    """Group the siblings (`SIBLINGS`) among the modules patched for `method` in `model`; each
    member's patch state points at its group. Returns the groups' module names."""
    names = {id(m): n for n, m in model.named_modules()}
    groups = []
    for parent in model.modules():
        for siblings in SIBLINGS:
            # Its own children only: PeftModel and LoraModel forward attribute lookups to the
            # model they wrap, whose children would be grouped twice.
            members = [parent._modules.get(n) for n in siblings]
            members = [m for m in members if isinstance(m, nn.Module) and _patched_by(m, method)]
            if len(members) < 2:
                continue
            group = SharedInputGroup(members, calls)
            for m in members:
                base.state_of(m).shared = group
            groups.append([names[id(m)] for m in members])
    return groups


def _patched_by(module: nn.Module, method: str) -> bool:
    return base.is_patched(module) and base.state_of(module).method == method
