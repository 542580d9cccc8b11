"""One IA3 linear, forward + backward: frozen base vs PEFT vs fastpeft (GPU timing).

The fused provider is checked against PEFT (output and IA3-vector gradient) before anything is
timed, so a fast wrong kernel never posts a number. Times are triton.testing.do_bench medians with
p20/p80, in ms.
"""

import copy

import torch
import torch.nn as nn

from ..patch import patch


class _OneLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.proj = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x):
        return self.proj(x)


def build_providers(K, N, feedforward, dtype, device, autocast_adapter_dtype=True):
    """{'base': frozen linear, 'peft': PEFT IA3, 'fastpeft': patched PEFT IA3} modules."""
    from peft import IA3Config, get_peft_model

    torch.manual_seed(0)
    base = _OneLinear(K, N).to(device=device, dtype=dtype).requires_grad_(False)
    config = IA3Config(target_modules=["proj"], feedforward_modules=["proj"] if feedforward else [])
    peft_model = get_peft_model(
        copy.deepcopy(base), config, autocast_adapter_dtype=autocast_adapter_dtype
    )
    with torch.no_grad():  # PEFT initialises the vector to ones: make it do something
        for name, param in peft_model.named_parameters():
            if ".ia3_l." in name:
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
    fused = copy.deepcopy(peft_model)
    report = patch(fused)
    if len(report.patched) != 1:
        raise RuntimeError(f"fastpeft did not patch the benchmark layer: {report}")
    return {"base": base, "peft": peft_model, "fastpeft": fused}


def _fwd_bwd(model, x, dy):
    x.grad = None
    model(x).backward(dy)


def _vector_grad(model) -> torch.Tensor:
    (grad,) = [p.grad for n, p in model.named_parameters() if ".ia3_l." in n]
    return grad.float()


def _check_matches_peft(providers, x, dy, dtype) -> dict:
    outputs = {}
    for name in ("peft", "fastpeft"):
        model = providers[name]
        model.zero_grad(set_to_none=True)
        y = model(x)
        y.backward(dy)
        outputs[name] = (y.detach().float(), _vector_grad(model))
        model.zero_grad(set_to_none=True)
    (y_want, dl_want), (y_got, dl_got) = outputs["peft"], outputs["fastpeft"]
    y_err = (y_got - y_want).abs().max().item()
    y_limit = 2e-2 * y_want.abs().max().item() if dtype != torch.float32 else 1e-4
    dl_rel = ((dl_got - dl_want).norm() / dl_want.norm()).item()
    if not (y_err <= y_limit and dl_rel <= 1e-2):
        raise RuntimeError(
            f"fastpeft differs from PEFT: max|Δy| {y_err:.3e} (limit {y_limit:.3e}), "
            f"relative dl error {dl_rel:.3e} (limit 1e-2)"
        )
    return {"max_abs_err_vs_peft": y_err, "dl_rel_err_vs_peft": dl_rel}


def bench_ia3_layer(M=8192, K=4096, N=4096, feedforward=False, dtype=torch.bfloat16):
    """Median/p20/p80 ms of forward+backward per provider and the ratios the targets use."""
    import triton.testing

    device = torch.device("cuda")
    providers = build_providers(K, N, feedforward, dtype, device)
    xs = [torch.randn(M, K, device=device, dtype=dtype, requires_grad=True) for _ in range(2)]
    dy = torch.randn(M, N, device=device, dtype=dtype)
    row = {"M": M, "K": K, "N": N, "feedforward": feedforward, "dtype": str(dtype)}
    row.update(_check_matches_peft(providers, xs[0], dy, dtype))
    for name, model in providers.items():
        calls = iter(range(10**9))

        def step(model=model, calls=calls):
            _fwd_bwd(model, xs[next(calls) % 2], dy)  # rotate inputs so caches do not flatter

        median, p20, p80 = triton.testing.do_bench(step, quantiles=[0.5, 0.2, 0.8])
        row[f"{name}_ms"], row[f"{name}_p20_ms"], row[f"{name}_p80_ms"] = median, p20, p80
    row["fastpeft_over_base"] = row["fastpeft_ms"] / row["base_ms"]
    row["peft_over_fastpeft"] = row["peft_ms"] / row["fastpeft_ms"]
    return row
