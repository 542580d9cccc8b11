"""The public functional API: every fused op's wrapper, with full argument checking.

Each wrapper checks its arguments (fastpeft/checks.py), resolves the backend with the one
dispatcher (fastpeft/dispatch.py), draws the dropout seeds, flattens to 2-D and calls the custom op
(fastpeft/ops/).
"""

import math
from typing import NamedTuple

import torch

from . import checks, dispatch
from .ops import adapter as adapter_ops
from .ops import ia3 as ia3_ops
from .ops import lora as lora_ops


def _draw_seeds(count: int, p: float, device: torch.device) -> torch.Tensor | None:
    """`count` dropout seeds drawn from torch's generator, None without dropout. Drawn inside the
    graph (a tensor op), so the ops stay pure and compile-friendly."""
    if p == 0:
        return None
    return torch.randint(0, 2**31 - 1, (count,), device=device, dtype=torch.int64)


def _scaling_for_op(scaling, lora_b: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(the op's float scaling, the lora_b it multiplies) for a number or a 0-d tensor scaling.

    A 0-d tensor (PEFT's `prepare_model_for_compiled_hotswap` makes every scaling one, so a
    hot-swap can `fill_` it without recompiling) on the CPU is read with `.item()` in eager mode:
    that never waits for a device and gives exactly the float path's numbers. On an accelerator
    `.item()` would block the host on every call, and under torch.compile it would break the graph
    and bake the value in, defeating the hot-swap. There it is folded into B instead, as a traced
    tensor op: B·s is an [N, R] product (negligible next to the GEMMs, fp32 math, rounded once to
    B's dtype), autograd carries dB = s·d(B·s), and a later `fill_` is seen without a recompile.
    """
    if not isinstance(scaling, torch.Tensor):
        return float(scaling), lora_b
    if scaling.device.type == "cpu" and not torch.compiler.is_compiling():
        value = float(scaling.item())
        if not math.isfinite(value):
            raise ValueError(f"scaling must be a finite number, got {value!r}")
        return value, lora_b
    folded = lora_b.to(torch.float32) * scaling.to(torch.float32)
    return 1.0, folded.to(lora_b.dtype)


def lora_backend(x, weight, lora_a, dropout_p: float, backend: str) -> str:
    """The backend a `lora_linear` call with these arguments runs on (the dispatcher's choice,
    per shape, adapter dtype and dropout; on a GPU "auto" races the two Triton paths once)."""
    M = x.numel() // max(x.shape[-1], 1)
    shape = (M, weight.shape[0], x.shape[-1])
    variant = (lora_a.dtype, float(dropout_p) > 0)
    sizes = {"rank": lora_a.shape[0]}
    return dispatch.resolve("lora", backend, x.device, x.dtype, sizes, shape=shape, variant=variant)


def _checked_lora_call(x, weight, bias, lora_a, lora_b, scaling, dropout_p, backend):
    """(x as [M, K], the backend that runs it) for a LoRA linear call, its arguments checked. A
    2-D x is passed as it is: a view node costs autograd a node per call."""
    checks.lora_args(x, weight, bias, lora_a, lora_b, scaling, dropout_p)
    x2d = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    return x2d, lora_backend(x, weight, lora_a, dropout_p, backend)


def lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scaling: float | torch.Tensor,
    dropout_p: float = 0.0,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Fused LoRA linear: ``x Wᵀ + b + scaling · (drop(x) lora_aᵀ) lora_bᵀ``.

    x [..., K] and the frozen base weight [N, K] / bias [N] share a dtype (fp32, fp16, bf16);
    lora_a [R, K] and lora_b [N, R] share the adapter dtype, which may differ (PEFT keeps fp32
    adapters on a bf16 base: x is cast to the adapter dtype for the low-rank branch and the sum
    is rounded once to x's dtype). ``scaling`` is a number or a 0-d float tensor (as PEFT's
    hot-swap preparation stores it; off the CPU or under torch.compile it is applied as B·scaling
    without reading its value, so no host sync and no recompile when it changes, and a non-finite
    value is not caught). ``dropout_p`` is inverted dropout on the low-rank branch's input
    (pass 0 in eval mode); its mask comes from counter-based random numbers drawn from torch's
    global generator; the backward pass gets the forward's mask (on the Triton path, 1 bit per
    element stored by the forward, or drawn again: FASTPEFT_DROPOUT_MASK). Gradients flow to x,
    lora_a and lora_b; weight and bias must not require grad. Returns y [..., N] in x's dtype.
    ``backend``: "auto" (on CUDA the faster of "triton", the fused kernels, and "hybrid", cuBLAS for
    the base products with the LoRA terms in Triton, timed once per shape; PyTorch elsewhere),
    "triton", "hybrid" or "torch".
    """
    x2d, resolved = _checked_lora_call(x, weight, bias, lora_a, lora_b, scaling, dropout_p, backend)
    seed = _draw_seeds(1, dropout_p, x.device)
    scaling, lora_b = _scaling_for_op(scaling, lora_b)
    args = (x2d, weight, bias, lora_a, lora_b, seed, scaling, float(dropout_p), resolved)
    if torch.compiler.is_compiling():  # the custom ops: what a graph can hold
        y, _, _ = lora_ops.lora_linear_fwd(*args)
    else:  # the same implementation without the ops' dispatch cost (ops/lora.py)
        y = lora_ops.EagerLoRALinear.apply(*args)
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], weight.shape[0])


class SharedDown(NamedTuple):
    """One adapter's share of `lora_shared_down`: t = drop(x) Aᵀ [M, R] (M: x's leading sizes
    flattened), its dropout mask as the backward reads it, and the seed it was drawn from."""

    t: torch.Tensor
    keep: torch.Tensor
    seed: torch.Tensor | None


SHARED_INPUT_BACKENDS = ("triton", "hybrid")  # the backends with the shared down kernel
SHARED_INPUT_MAX = 3  # q, k and v: lora_down_kernel holds at most three accumulators


def lora_shared_down(
    x: torch.Tensor,
    lora_as: list[torch.Tensor],
    dropout_p: float = 0.0,
    *,
    backend: str = "auto",
) -> list[SharedDown]:
    """Shared-input LoRA's down-projections: ``drop_g(x) lora_as[g]ᵀ`` for two or three adapters
    of one rank and dtype on the same x (q/k/v or gate/up of one layer), from one kernel that
    reads x once. Each adapter gets its own dropout mask from its own seed, drawn from torch's
    generator in list order: the masks are independent, as PEFT's separate dropout modules
    draw them, and equal to what `lora_linear` would draw for each in turn. Nothing here
    is differentiated: pass each share to `lora_linear_up`, whose backward gives dA (and dx's
    rank-r term) from the share's t and mask. Runs on the Triton path only (``backend``:
    "auto" on CUDA, "triton" or "hybrid").
    """
    checks.shared_down_args(x, lora_as, dropout_p, SHARED_INPUT_MAX)
    x2d = x.reshape(-1, x.shape[-1])
    sizes = {"rank": lora_as[0].shape[0]}
    # No shape: nothing to race, the down kernel is the same on both Triton backends.
    resolved = dispatch.resolve("lora", backend, x.device, x.dtype, sizes)
    if resolved not in SHARED_INPUT_BACKENDS:
        raise ValueError(
            f"backend={backend!r} resolves to {resolved!r}: shared-input LoRA runs on "
            f"{' or '.join(SHARED_INPUT_BACKENDS)} (CUDA, or Triton's interpreter)"
        )
    seeds = [_draw_seeds(1, dropout_p, x.device) for _ in lora_as]
    t, keep = lora_ops.lora_shared_down(
        x2d.detach(), [a.detach() for a in lora_as], [s for s in seeds if s is not None],
        float(dropout_p), resolved,
    )  # fmt: skip
    return [
        SharedDown(t[:, g], keep[g] if keep.dim() == 3 else keep, seed)
        for g, seed in enumerate(seeds)
    ]


def lora_linear_up(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scaling: float | torch.Tensor,
    dropout_p: float,
    down: SharedDown,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """`lora_linear` for an adapter whose down-projection `lora_shared_down` computed (``down``,
    from the same x, lora_a and dropout_p): ``x Wᵀ + b + scaling · down.t lora_bᵀ``, with the
    gradients of `lora_linear` (x, lora_a through down's mask, lora_b). ``backend``: "auto",
    "triton" or "hybrid" (the Triton path, whose masks `lora_shared_down` wrote).
    """
    x2d, resolved = _checked_lora_call(x, weight, bias, lora_a, lora_b, scaling, dropout_p, backend)
    checks.shared_down_share(down, x2d.shape[0], lora_a)
    if resolved not in SHARED_INPUT_BACKENDS:
        raise ValueError(
            f"backend={backend!r} resolves to {resolved!r}: a shared down-projection's mask is "
            f"the Triton path's ({' or '.join(SHARED_INPUT_BACKENDS)})"
        )
    scaling, lora_b = _scaling_for_op(scaling, lora_b)
    args = (x2d, weight, bias, lora_a, lora_b, down.t, down.keep, down.seed, scaling,
            float(dropout_p), resolved)  # fmt: skip
    if torch.compiler.is_compiling():
        y = lora_ops.lora_linear_up(*args)
    else:
        y = lora_ops.EagerLoRALinearUp.apply(*args)
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], weight.shape[0])


def ia3_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    ia3_l: torch.Tensor,
    feedforward: bool,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Fused IA3 linear: ``(x Wᵀ + b) ⊙ ia3_l``, or ``(x ⊙ ia3_l) Wᵀ + b`` when ``feedforward``.

    x [..., K] and the frozen base weight [N, K] / bias [N] share a dtype (fp32, fp16, bf16);
    ia3_l is 1-D, [N] (output scaling, PEFT's attention targets) or [K] (``feedforward=True``,
    input scaling), in fp32 (PEFT's default, also on a 16-bit base) or the base dtype. Numerics
    are PEFT's: on a 16-bit base, the base output (output case) or x ⊙ ia3_l (input case) is
    rounded to the base dtype where PEFT rounds it. Gradients flow to ia3_l and x; weight and bias
    must not require grad. Returns y [..., N] in x's dtype. ``backend``: "auto" (on CUDA the
    faster of "triton", the fused kernels, and "hybrid", cuBLAS for the base products with the
    scale and dl in a Triton side kernel, timed once per shape bucket; PyTorch elsewhere),
    "triton", "hybrid" or "torch".
    """
    checks.ia3_args(x, weight, bias, ia3_l, feedforward)
    leading, K = x.shape[:-1], x.shape[-1]
    shape = (x.numel() // max(K, 1), weight.shape[0], K)
    variant = (ia3_l.dtype, bool(feedforward))
    resolved = dispatch.resolve("ia3", backend, x.device, x.dtype, shape=shape, variant=variant)
    # z (the base output) is stored for dl only when ia3_l will get a gradient.
    save_z = not feedforward and ia3_l.requires_grad and torch.is_grad_enabled()
    flat = x.dim() == 2  # no view nodes around a 2-D call (each costs autograd a node)
    args = (x if flat else x.reshape(-1, K), weight, bias, ia3_l, feedforward, save_z, resolved)
    if torch.compiler.is_compiling():  # the custom ops: what a graph can hold
        y, _ = ia3_ops.ia3_linear_fwd(*args)
    else:  # the same implementation without the ops' dispatch cost (ops/ia3.py)
        y = ia3_ops.EagerIA3Linear.apply(*args)
    return y if flat else y.reshape(*leading, weight.shape[0])


def adapter(
    z: torch.Tensor,
    w_down: torch.Tensor,
    w_up: torch.Tensor,
    scaling: float = 1.0,
    activation: str = "tanh",
    dropout_p: float = 0.0,
    residual: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Fused bottleneck adapter: ``residual + scaling · act(drop(z) w_downᵀ) w_upᵀ``.

    z [..., d] (fp32, fp16 or bf16); w_down [H, d] and w_up [d, H] share the adapter dtype, which
    may differ from z's (fp32 adapters on a 16-bit model: z is cast to it for the bottleneck and
    the sum is rounded once to the residual's dtype). ``residual`` [..., d] defaults to z (a pre-
    or post-adapter); pass the base output for a parallel adapter. ``activation`` is one of tanh,
    relu, gelu (exact erf form) or silu. ``dropout_p`` is inverted dropout on z for the bottleneck
    (pass 0 in eval mode); its mask comes from counter-based random numbers seeded from torch's
    global generator; the backward gets the forward's mask (on the Triton path 1 bit per element
    stored by the forward, or drawn again: FASTPEFT_DROPOUT_MASK). Gradients flow to z, w_down,
    w_up and residual; pre [M, H] (and the mask's bits) are saved. Returns [..., d] in the
    residual's dtype.
    ``backend``: "auto" (Triton on CUDA, PyTorch elsewhere), "triton" or "torch".
    """
    checks.adapter_input(z, "z")
    checks.adapter_weights(z, w_down, w_up, ("w_down", "w_up"))
    tensors = {"z": z, "w_down": w_down, "w_up": w_up}
    if residual is not None:
        checks.require_tensor(residual, "residual")
        if residual.shape != z.shape:
            raise ValueError(
                f"residual must have z's shape {tuple(z.shape)}, got {tuple(residual.shape)}"
            )
        tensors["residual"] = residual
    checks.adapter_settings(tensors, scaling, activation, dropout_p)
    d = z.shape[-1]
    sizes, shape = {"bottleneck": w_down.shape[0]}, (z.numel() // d, d)
    resolved = dispatch.resolve("adapter", backend, z.device, z.dtype, sizes, shape=shape)
    flat = z.dim() == 2  # no view nodes around a 2-D call (each costs autograd a node)
    res2d = residual if residual is None or flat else residual.reshape(-1, d)
    args = (z if flat else z.reshape(-1, d), w_down, w_up, res2d,
            _draw_seeds(1, dropout_p, z.device), float(scaling), float(dropout_p), activation,
            resolved)  # fmt: skip
    if torch.compiler.is_compiling():  # the custom ops: what a graph can hold
        out, _, _ = adapter_ops.adapter_fwd(*args)
    else:  # the same implementation without the ops' dispatch cost (ops/adapter.py)
        out = adapter_ops.EagerAdapter.apply(*args)
    return out if flat else out.reshape(z.shape)


def adapter_pair(
    x: torch.Tensor,
    w_down_1: torch.Tensor,
    w_up_1: torch.Tensor,
    w_down_2: torch.Tensor,
    w_up_2: torch.Tensor,
    scaling: float = 1.0,
    activation: str = "tanh",
    dropout_p: float = 0.0,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two pre-adapters on one input: ``(x + A1(x), x + A2(x))``, x read once.

    Paper A's LLaVA placement puts one adapter on gate_proj's input and an independent one on
    up_proj's; both see the same x [..., d]. Each A is as in :func:`adapter` (same scaling,
    activation and dropout probability, independent dropout masks). All four weights share one
    dtype and w_down_2/w_up_2 have w_down_1/w_up_1's shapes. Returns (u, v), each [..., d] in x's
    dtype; gradients flow to x and all four weights.
    """
    checks.adapter_input(x, "x")
    checks.adapter_pair_weights(x, w_down_1, w_up_1, w_down_2, w_up_2)
    tensors = {"x": x, "w_down_1": w_down_1, "w_up_1": w_up_1}
    tensors.update(w_down_2=w_down_2, w_up_2=w_up_2)
    checks.adapter_settings(tensors, scaling, activation, dropout_p)
    d = x.shape[-1]
    sizes, shape = {"bottleneck": w_down_1.shape[0]}, (x.numel() // d, d)
    resolved = dispatch.resolve("adapter_pair", backend, x.device, x.dtype, sizes, shape=shape)
    flat = x.dim() == 2
    args = (x if flat else x.reshape(-1, d), w_down_1, w_up_1, w_down_2, w_up_2,
            _draw_seeds(2, dropout_p, x.device), float(scaling), float(dropout_p), activation,
            resolved)  # fmt: skip
    if torch.compiler.is_compiling():
        u, v, _, _ = adapter_ops.adapter_pair_fwd(*args)
    else:
        u, v = adapter_ops.EagerAdapterPair.apply(*args)
    return (u, v) if flat else (u.reshape(x.shape), v.reshape(x.shape))


def dropout_keep_mask(
    seed: torch.Tensor, shape: tuple[int, int], p: float, *, backend: str = "auto"
) -> torch.Tensor:
    """The bool keep-mask the fused LoRA and adapter ops apply to an input of `shape` [M, K] for
    the one-element `seed` (a pair's adapter i uses ``seed[i : i + 1]``). Tests and debugging
    only: the training path never materialises it."""
    resolved = dispatch.resolve("lora", backend, seed.device)
    return dispatch.implementation("lora", resolved).keep_mask(seed, shape[0], shape[1], p)
