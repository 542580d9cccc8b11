"""Argument checks for the public wrappers (fastpeft.functional): every error names the argument."""

import math

import torch

from .reference.adapter import ACTIVATIONS
from .registry import FLOAT_DTYPES


def require_tensor(value, name: str) -> torch.Tensor:
    """`value` if it is an fp32/fp16/bf16 tensor; else a TypeError naming `name`."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {value.dtype}")
    return value


def one_device(tensors: dict[str, torch.Tensor]) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")


def base_linear(x, weight, bias, extra: dict) -> tuple[int, int]:
    """Checks shared by the fused linears: x [..., K], weight [N, K], bias [N], one device."""
    named = {"x": x, "weight": weight, **extra}
    for name, value in named.items():
        require_tensor(value, name)
    if bias is not None:
        named["bias"] = require_tensor(bias, "bias")
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
    one_device(named)
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("weight and bias must be frozen (requires_grad=False) for the fused path")
    return N, K


def lora_args(x, weight, bias, lora_a, lora_b, scaling, dropout_p) -> None:
    N, K = base_linear(x, weight, bias, {"lora_a": lora_a, "lora_b": lora_b})
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


def shared_down_args(x, lora_as, dropout_p, most: int) -> None:
    """lora_shared_down's arguments: 2 to `most` adapters' A factors of one shape [R, K] and
    dtype, contiguous alike, for x [..., K] on their device."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise TypeError("x must be a tensor of shape [..., K]")
    if not isinstance(lora_as, (list, tuple)) or not 2 <= len(lora_as) <= most:
        count = len(lora_as) if isinstance(lora_as, (list, tuple)) else type(lora_as).__name__
        raise ValueError(f"lora_as must be a list of 2 to {most} lora_a tensors, got {count}")
    first = lora_as[0]
    K = x.shape[-1]
    for g, a in enumerate(lora_as):
        if not isinstance(a, torch.Tensor) or a.dim() != 2 or a.shape[1] != K:
            raise ValueError(f"lora_as[{g}] must have shape [R, K={K}]")
        if a.shape != first.shape or a.dtype != first.dtype or a.stride() != first.stride():
            raise ValueError(
                f"lora_as[{g}] ({tuple(a.shape)}, {a.dtype}) differs from lora_as[0] "
                f"({tuple(first.shape)}, {first.dtype}) in shape, dtype or layout: shared-input "
                "adapters take one rank and dtype"
            )
        if a.device != x.device:
            raise ValueError(f"lora_as[{g}] is on {a.device}, x on {x.device}")
    if first.dtype not in FLOAT_DTYPES or x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x and lora_as must be fp32, fp16 or bf16, got {x.dtype}, {first.dtype}")
    if not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a number in [0, 1), got {dropout_p!r}")


def shared_down_share(down, M: int, lora_a) -> None:
    """A `lora_shared_down` share passed to lora_linear_up fits its x's M rows and lora_a."""
    t = getattr(down, "t", None)
    want = (M, lora_a.shape[0])
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != want or t.dtype != lora_a.dtype:
        got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else repr(down)
        raise ValueError(
            f"down must be a lora_shared_down share with t of shape {list(want)} in "
            f"{lora_a.dtype} (x's rows, lora_a's rank), got {got}"
        )


def ia3_args(x, weight, bias, ia3_l, feedforward) -> None:
    if not isinstance(feedforward, bool):
        raise TypeError(f"feedforward must be a bool, got {type(feedforward).__name__}")
    N, K = base_linear(x, weight, bias, {"ia3_l": ia3_l})
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


def adapter_input(z, name: str) -> None:
    require_tensor(z, name)
    if z.dim() < 1 or z.shape[-1] == 0:
        raise ValueError(f"{name} must have shape [..., d] with d >= 1, got {tuple(z.shape)}")


def adapter_weights(z, w_down, w_up, names: tuple[str, str]) -> None:
    down, up = names
    require_tensor(w_down, down)
    require_tensor(w_up, up)
    d = z.shape[-1]
    if w_down.dim() != 2 or w_down.shape[1] != d or w_down.shape[0] == 0:
        raise ValueError(
            f"{down} must have shape [H, d={d}] with H >= 1, got {tuple(w_down.shape)}"
        )
    H = w_down.shape[0]
    if tuple(w_up.shape) != (d, H):
        raise ValueError(f"{up} must have shape [d={d}, H={H}], got {tuple(w_up.shape)}")
    if w_down.dtype != w_up.dtype:
        raise TypeError(
            f"{down} and {up} must share one dtype, got {w_down.dtype} and {w_up.dtype}"
        )


def adapter_settings(tensors: dict, scaling, activation, dropout_p) -> None:
    one_device(tensors)
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a str, got {type(activation).__name__}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    if isinstance(scaling, bool) or not isinstance(scaling, (int, float)):
        raise TypeError(f"scaling must be a number, got {type(scaling).__name__}")
    if not math.isfinite(scaling):
        raise ValueError(f"scaling must be finite, got {scaling!r}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        raise TypeError(f"dropout_p must be a number, got {type(dropout_p).__name__}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p!r}")


def adapter_pair_weights(x, w_down_1, w_up_1, w_down_2, w_up_2) -> None:
    adapter_weights(x, w_down_1, w_up_1, ("w_down_1", "w_up_1"))
    adapter_weights(x, w_down_2, w_up_2, ("w_down_2", "w_up_2"))
    if w_down_2.shape != w_down_1.shape:
        raise ValueError(
            f"w_down_2 must have w_down_1's shape {tuple(w_down_1.shape)}, "
            f"got {tuple(w_down_2.shape)}"
        )
    if w_down_2.dtype != w_down_1.dtype:
        raise TypeError(
            f"w_down_2/w_up_2 must have w_down_1's dtype {w_down_1.dtype}, got {w_down_2.dtype}"
        )
