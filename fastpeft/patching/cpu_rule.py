"""On the CPU, a patched LoRA or IA3 layer is never slower than PEFT's own forward.

The PyTorch path's fused op pays a custom-op boundary and its own autograd record per call; at
small shapes that costs more than PEFT's few eager kernels (IA3's one elementwise op most of
all). So the first CPU call of each kind (the method, a power-of-two bucket of the token count,
the layer's sizes, dtypes, rank or vector, dropout on or off, IA3's scaling side, training or
not) times both paths on that call's input (forward, and in training the backward to the
adapter's parameters too, without touching their .grad; the random streams restored afterwards,
so training is not perturbed and a resumed run repeats exactly), and every later call of that
kind takes the faster. Calls that PEFT's forward wins are counted under `REASON` in the
module's fallbacks and listed by `PatchReport.usage(model)`; `decisions()` shows the timings.
A module whose call went to PEFT's forward remembers that call's `route_key`, and a call that
matches it goes there again without the per-call checks.
"""

import time

import torch

from .. import env

REASON = "CPU: PEFT's own forward is faster at this shape (timed once: fastpeft.patching.cpu_rule)"
_REPEATS = 3

# kind -> {"fused": seconds, "peft": seconds}
_timings: dict[tuple, dict[str, float]] = {}
_generation = 0  # bumped by clear(): the routes modules remembered before it are void


def _bucket(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def applies(x: torch.Tensor, backend: str) -> bool:
    """Whether a call on x may be routed by the rule: on the CPU, where "auto" picked the
    PyTorch path (an explicit backend is the caller's to pin), with FASTPEFT_CPU_RULE on."""
    return x.device.type == "cpu" and backend == "auto" and env.cpu_rule()


def kind(
    method: str, x: torch.Tensor, weight: torch.Tensor, adapter: torch.Tensor, *extra
) -> tuple:
    """The key calls share a decision under: `method`, the token count's power-of-two bucket,
    the base weight's shape, the dtypes, the adapter tensor's shape, whether autocast is on
    (PEFT's forward then casts) and `extra` (dropout on, IA3's scaling side)."""
    tokens = x.numel() // x.shape[-1] if x.dim() else 1
    shape = (_bucket(tokens), tuple(weight.shape), tuple(adapter.shape))
    autocast = torch.is_autocast_enabled(x.device.type)
    return (method, *shape, x.dtype, adapter.dtype, autocast, *extra)


def peft_is_faster(key: tuple, fused, own, train: bool, trainable=list) -> bool:
    """Whether PEFT's forward (`own()`) beats the fused one (`fused()`) for calls of kind `key`,
    timing both the first time the kind is seen (eagerly; under torch.compile nothing is timed
    and the fused path is kept). In training (`train`: autograd on and the layer's adapter or
    its input needs a gradient; the caller knows cheaply), the timing covers the backward to
    `trainable()` too (the layer's trainable tensors and its input when that needs a gradient:
    else PEFT's graph would skip its dx GEMM; torch.autograd.grad to them: nothing lands in a
    .grad): the step a training call pays, where the two paths' backwards differ as much as their
    forwards. `trainable` is a callable, called only when timing: building the list costs more
    than the lookup every later call makes."""
    key = (*key, train)
    found = _timings.get(key)
    if found is None:
        if torch.compiler.is_compiling():
            return False
        tensors = [p for p in trainable() if p.requires_grad] if train else []
        # The rule only routes CPU calls; a fused call runs with autocast off (base.autocast_off).
        with torch.autocast("cpu", enabled=False):
            fused_seconds = _best(fused, tensors)
        found = {"fused": fused_seconds, "peft": _best(own, tensors)}
        _timings[key] = found
    return found["peft"] < found["fused"]


def route_key(module, x: torch.Tensor, backend: str) -> tuple:
    """What a module's call must match to reuse the module's last routing to PEFT's forward
    without checking again (fastpeft/patching/base.routed_forward): the adapter state PEFT's
    tuner layers switch (active adapter, disabled, merged), train or eval mode (dropout), the
    input's shape, dtype and gradient need, grad and autocast modes, the backend and the rule's
    setting, and no clear() since. The full checks cost about 27 µs an IA3 call and 45 µs a
    LoRA call (4x64 layer, 1 thread, this project's 2-core VM), several percent of a small
    layer's CPU forward; the route leaves about 10. A PEFT route is always right in numbers (PEFT's
    forward handles every state), and the fallback counts keep their reasons."""
    return (
        _generation,
        env.cpu_rule(),
        backend,
        _frozen(module.__dict__.get("_active_adapter")),
        module.__dict__.get("_disable_adapters"),
        len(module.__dict__.get("merged_adapters", ())),
        module.training,  # dropout on or off: another kind
        x.device.type,
        x.shape,
        x.dtype,
        x.requires_grad,
        torch.is_grad_enabled(),
        torch.is_autocast_enabled("cpu"),
    )


def _frozen(value):
    """A list (PEFT's several active adapters) as a tuple: a key must not change under it."""
    return tuple(value) if isinstance(value, list) else value


def decisions() -> dict[tuple, dict[str, float]]:
    """The timed kinds: {kind: {"fused": seconds, "peft": seconds}}."""
    return {key: dict(value) for key, value in _timings.items()}


def clear() -> None:
    global _generation
    _timings.clear()
    _generation += 1


def _best(forward, trainable: list) -> float:
    def step():
        y = forward()
        if trainable:
            torch.autograd.grad(y.float().sum(), trainable, allow_unused=True)

    with torch.random.fork_rng(devices=[]), torch.set_grad_enabled(bool(trainable)):
        step()  # warm-up
        times = []
        for _ in range(_REPEATS):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return min(times)
