"""One LoRA linear, forward + backward: frozen base vs PEFT vs fastpeft (GPU timing).

Each provider is checked against PEFT's output before it is timed, so a fast wrong kernel never
posts a number. Times are triton.testing.do_bench medians with p20/p80, in ms.
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


def build_providers(K, N, r, dropout, dtype, device, autocast_adapter_dtype=True):
    """{'base': frozen linear, 'peft': PEFT LoRA, 'fastpeft': patched PEFT LoRA} modules."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = _OneLinear(K, N).to(device=device, dtype=dtype).requires_grad_(False)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        lora_dropout=dropout,
        target_modules=["proj"],
        init_lora_weights=False,
    )
    peft_model = get_peft_model(
        copy.deepcopy(base), config, autocast_adapter_dtype=autocast_adapter_dtype
    )
    fused = copy.deepcopy(peft_model)
    report = patch(fused)
    if len(report.patched) != 1:
        raise RuntimeError(f"fastpeft did not patch the benchmark layer: {report}")
    return {"base": base, "peft": peft_model, "fastpeft": fused}


def _fwd_bwd(model, x, dy):
    x.grad = None
    model(x).backward(dy)


def _check_matches_peft(providers, x, dtype):
    # Dropout streams differ by design, so the check runs with dropout off (eval mode).
    with torch.no_grad():
        for m in providers.values():
            m.eval()
        want = providers["peft"](x).float()
        got = providers["fastpeft"](x).float()
        for m in providers.values():
            m.train()
    err = (got - want).abs().max().item()
    limit = 2e-2 * want.abs().max().item() if dtype != torch.float32 else 1e-4
    if not err <= limit:
        raise RuntimeError(f"fastpeft output differs from PEFT by {err:.3e} (limit {limit:.3e})")
    return err


def bench_lora_layer(M=8192, K=4096, N=4096, r=16, dropout=0.0, dtype=torch.bfloat16):
    """Median/p20/p80 ms of forward+backward per provider and the ratios the targets use."""
    import triton.testing

    device = torch.device("cuda")
    providers = build_providers(K, N, r, dropout, dtype, device)
    xs = [torch.randn(M, K, device=device, dtype=dtype, requires_grad=True) for _ in range(2)]
    dy = torch.randn(M, N, device=device, dtype=dtype)
    max_err = _check_matches_peft(providers, xs[0], dtype)
    row = {"M": M, "K": K, "N": N, "r": r, "dropout": dropout, "dtype": str(dtype)}
    row["max_abs_err_vs_peft"] = max_err
    for name, model in providers.items():
        calls = iter(range(10**9))

        def step(model=model, calls=calls):
            _fwd_bwd(model, xs[next(calls) % 2], dy)  # rotate inputs so caches do not flatter

        median, p20, p80 = triton.testing.do_bench(step, quantiles=[0.5, 0.2, 0.8])
        row[f"{name}_ms"], row[f"{name}_p20_ms"], row[f"{name}_p80_ms"] = median, p20, p80
    row["fastpeft_over_base"] = row["fastpeft_ms"] / row["base_ms"]
    row["peft_over_fastpeft"] = row["peft_ms"] / row["fastpeft_ms"]
    return row
