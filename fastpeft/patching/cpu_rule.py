"""On the CPU, a patched LoRA layer is never slower than PEFT's own forward.

The PyTorch path's fused op pays a custom-op boundary and its own autograd record per call; at
small shapes that costs more than PEFT's few eager kernels. So the first CPU call of each kind
(power-of-two bucket of the token count and the layer's sizes, dtypes, rank, dropout on or off)
times both forwards on that call's input (no autograd, the random streams restored afterwards,
so training is not perturbed and a resumed run repeats exactly), and every later call of that
kind takes the faster. Calls that PEFT's forward wins are counted under `REASON` in the module's
fallbacks and listed by `PatchReport.usage(model)`; `decisions()` shows the timings.
"""

import time

import torch

REASON = "CPU: PEFT's own forward is faster at this shape (timed once: fastpeft.patching.cpu_rule)"
_REPEATS = 3

# kind -> {"fused": seconds, "peft": seconds}
_timings: dict[tuple, dict[str, float]] = {}


def _bucket(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def kind(x: torch.Tensor, weight: torch.Tensor, adapter: torch.Tensor, dropout: bool) -> tuple:
    tokens = x.numel() // x.shape[-1] if x.dim() else 1
    return (_bucket(tokens), tuple(weight.shape), x.dtype, adapter.dtype, adapter.shape[0], dropout)


def peft_is_faster(key: tuple, fused, own) -> bool:
    """Whether PEFT's forward (`own()`) beats the fused one (`fused()`) for calls of kind `key`,
    timing both the first time the kind is seen (eagerly; under torch.compile nothing is timed
    and the fused path is kept)."""
    found = _timings.get(key)
    if found is None:
        if torch.compiler.is_compiling():
            return False
        found = _timings[key] = {"fused": _best(fused), "peft": _best(own)}
    return found["peft"] < found["fused"]


def decisions() -> dict[tuple, dict[str, float]]:
    """The timed kinds: {kind: {"fused": seconds, "peft": seconds}}."""
    return {key: dict(value) for key, value in _timings.items()}


def clear() -> None:
    _timings.clear()


def _best(forward) -> float:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        forward()  # warm-up
        times = []
        for _ in range(_REPEATS):
            start = time.perf_counter()
            forward()
            times.append(time.perf_counter() - start)
    return min(times)
