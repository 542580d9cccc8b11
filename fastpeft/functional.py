"""Public functional API: the fused ops with full argument checking."""

import math

import torch

from .ops import _dispatch
from .ops import ia3 as ia3_ops
from .ops import lora as lora_ops
from .ops.adapter import adapter, adapter_pair  # noqa: F401  (public; checks live with the op)

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _require_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {value.dtype}")
    return value


def _check_base_linear(x, weight, bias, extra: dict) -> tuple[int, int]:
    """Checks shared by the fused linears: x [..., K], weight [N, K], bias [N], one device."""
    named = {"x": x, "weight": weight, **extra}
    for name, value in named.items():
        _require_tensor(value, name)
    if bias is not None:
        named["bias"] = _require_tensor(bias, "bias")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [N, K], got shape {tuple(weight.shape)}")
    N, K = weight.shape
    if x.dim() < 1 or x.shape[-1] != K:
        raise ValueError(
            f"x must have shape [..., K] with K = weight.shape[1] = {K}, got {tuple(x.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (N,):
        raise ValueError(f"bias must have shape [N={N}], got {tuple(bias.shape)}")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise TypeError(
            f"x, weight and bias must share one dtype, got x {x.dtype}, weight {weight.dtype}"
            + (f", bias {bias.dtype}" if bias is not None else "")
        )
    devices = {name: t.device for name, t in named.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("weight and bias must be frozen (requires_grad=False) for the fused path")
    return N, K


def _check_lora_args(x, weight, bias, lora_a, lora_b, scaling, dropout_p) -> None:
    N, K = _check_base_linear(x, weight, bias, {"lora_a": lora_a, "lora_b": lora_b})
    if lora_a.dim() != 2 or lora_a.shape[1] != K:
        raise ValueError(f"lora_a must have shape [R, K={K}], got {tuple(lora_a.shape)}")
    R = lora_a.shape[0]
    if R == 0:
        raise ValueError("lora_a must have rank R >= 1, got shape (0, K)")
    if lora_b.dim() != 2 or tuple(lora_b.shape) != (N, R):
        raise ValueError(f"lora_b must have shape [N={N}, R={R}], got {tuple(lora_b.shape)}")
    if lora_a.dtype != lora_b.dtype:
        raise TypeError(
            f"lora_a and lora_b must share one dtype, got {lora_a.dtype} and {lora_b.dtype}"
        )
    if isinstance(scaling, torch.Tensor):
        if scaling.dim() != 0 or not scaling.is_floating_point():
            raise ValueError(
                "scaling must be a finite number or a 0-d floating-point tensor, got a "
                f"{scaling.dtype} tensor of shape {tuple(scaling.shape)}"
            )
    elif not isinstance(scaling, (int, float)) or not math.isfinite(scaling):
        raise ValueError(f"scaling must be a finite number, got {scaling!r}")
    if not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a number in [0, 1), got {dropout_p!r}")


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
    global generator and is regenerated, not stored, for the backward pass. Gradients flow to x,
    lora_a and lora_b; weight and bias must not require grad. Returns y [..., N] in x's dtype.
    ``backend``: "auto" (Triton on CUDA, PyTorch elsewhere), "triton" or "torch".
    """
    _check_lora_args(x, weight, bias, lora_a, lora_b, scaling, dropout_p)
    resolved = _dispatch.resolve(backend, x.device)
    if resolved == "triton" and lora_a.shape[0] > 256:
        raise ValueError(f"backend='triton' supports LoRA rank <= 256, got {lora_a.shape[0]}")
    leading, K = x.shape[:-1], x.shape[-1]
    x2d = x.reshape(-1, K)
    seed = None
    if dropout_p > 0:
        seed = torch.randint(0, 2**31 - 1, (1,), device=x.device, dtype=torch.int64)
    scaling, lora_b = _scaling_for_op(scaling, lora_b)
    y, _, _ = lora_ops.lora_linear_fwd(
        x2d, weight, bias, lora_a, lora_b, seed, scaling, float(dropout_p), resolved
    )
    return y.reshape(*leading, weight.shape[0])


def _check_ia3_args(x, weight, bias, ia3_l, feedforward) -> None:
    if not isinstance(feedforward, bool):
        raise TypeError(f"feedforward must be a bool, got {type(feedforward).__name__}")
    N, K = _check_base_linear(x, weight, bias, {"ia3_l": ia3_l})
    if feedforward:
        want, what = (K,), f"[K={K}] (feedforward=True: input scaling)"
    else:
        want, what = (N,), f"[N={N}] (feedforward=False: output scaling)"
    if tuple(ia3_l.shape) != want:
        raise ValueError(
            f"ia3_l must have shape {what}, got {tuple(ia3_l.shape)} "
            "(PEFT stores it as [N, 1] or [1, K]: pass ia3_l.flatten())"
        )
    if ia3_l.dtype not in (torch.float32, weight.dtype):
        raise TypeError(
            f"ia3_l must be float32 or weight's dtype {weight.dtype}, got {ia3_l.dtype}"
        )


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
    must not require grad. Returns y [..., N] in x's dtype. ``backend``: "auto" (Triton on CUDA,
    PyTorch elsewhere), "triton" or "torch".
    """
    _check_ia3_args(x, weight, bias, ia3_l, feedforward)
    resolved = _dispatch.resolve(backend, x.device)
    leading, K = x.shape[:-1], x.shape[-1]
    # z (the base output) is stored for dl only when ia3_l will get a gradient.
    save_z = not feedforward and ia3_l.requires_grad and torch.is_grad_enabled()
    y, _ = ia3_ops.ia3_linear_fwd(
        x.reshape(-1, K), weight, bias, ia3_l, feedforward, save_z, resolved
    )
    return y.reshape(*leading, weight.shape[0])
