"""fastpeft.lora_linear: leading dims, and clear errors naming the bad argument."""

import pytest
import torch

import fastpeft
from fastpeft.reference.lora import lora_linear as reference
from fastpeft.testing import assert_close_fp32


def _args(M=6, K=8, N=5, R=2, dtype=torch.float32):
    return dict(
        x=torch.randn(M, K, dtype=dtype),
        weight=torch.randn(N, K, dtype=dtype),
        bias=torch.randn(N, dtype=dtype),
        lora_a=torch.randn(R, K),
        lora_b=torch.randn(N, R),
        scaling=2.0,
    )


def test_leading_dims_are_kept():
    args = _args()
    x = torch.randn(2, 3, 8)
    args["x"] = x
    y = fastpeft.lora_linear(**args, backend="torch")
    assert y.shape == (2, 3, 5)
    want = reference(x, args["weight"], args["bias"], args["lora_a"], args["lora_b"], 2.0)
    assert_close_fp32(y, want)


@pytest.mark.parametrize(
    "change, error, pattern",
    [
        ({"x": torch.randn(6, 7)}, ValueError, r"x must have shape \[..., K\] with K = .* 8"),
        ({"weight": torch.randn(5, 8, 1)}, ValueError, "weight must be 2-D"),
        ({"lora_a": torch.randn(2, 9)}, ValueError, r"lora_a must have shape \[R, K=8\]"),
        ({"lora_b": torch.randn(5, 3)}, ValueError, r"lora_b must have shape \[N=5, R=2\]"),
        ({"bias": torch.randn(4)}, ValueError, r"bias must have shape \[N=5\]"),
        ({"x": torch.randn(6, 8).half()}, TypeError, "x, weight and bias must share one dtype"),
        ({"lora_b": torch.randn(5, 2).half()}, TypeError, "lora_a and lora_b must share"),
        ({"x": torch.randint(0, 3, (6, 8))}, TypeError, "x must be float32, float16 or bfloat16"),
        ({"lora_a": [[1.0]]}, TypeError, "lora_a must be a torch.Tensor"),
        ({"scaling": float("nan")}, ValueError, "scaling must be a finite number"),
        ({"dropout_p": 1.0}, ValueError, r"dropout_p must be a number in \[0, 1\)"),
        ({"weight": torch.randn(5, 8).requires_grad_()}, ValueError, "must be frozen"),
        ({"backend": "gpu"}, ValueError, "backend must be one of"),
    ],
)
def test_bad_input_names_the_argument(change, error, pattern):
    args = {**_args(), **change}
    with pytest.raises(error, match=pattern):
        fastpeft.lora_linear(**args)


def test_device_mismatch_is_reported():
    args = _args()
    args["lora_b"] = args["lora_b"].to("meta")
    with pytest.raises(ValueError, match="all tensors must be on one device"):
        fastpeft.lora_linear(**args)
