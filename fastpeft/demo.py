"""`fastpeft demo`: a tiny LLaVA with PEFT LoRA trained a few steps, unpatched vs patched.

Everything is built locally from a config with random weights; nothing is downloaded.
"""

import copy
from collections.abc import Callable

import torch

from . import testing
from .bench.train_step import time_interleaved
from .patch import patch


def run_demo(
    steps: int = 8,
    hidden_size: int = 256,
    num_layers: int = 2,
    seq_len: int = 128,
    batch_size: int = 2,
    rank: int = 16,
    dropout: float = 0.05,
    backend: str = "auto",
    device: str | None = None,
    seed: int = 0,
    out: Callable[[str], None] = print,
) -> dict:
    """Train one LoRA-wrapped tiny LLaVA with and without fastpeft; print and return figures."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    base = testing.tiny_llava(
        hidden_size=hidden_size, num_layers=num_layers, vocab_size=512, seed=seed
    ).to(device)
    peft_model = testing.make_lora_model(base, r=rank, alpha=2 * rank, dropout=dropout, seed=seed)
    patched = copy.deepcopy(peft_model)
    report = patch(patched, backend=backend)
    out(str(report))

    batches = [
        testing.llava_batch(peft_model, batch_size, seq_len, seed=seed + i) for i in range(4)
    ]
    peft_model.eval(), patched.eval()
    with torch.no_grad():
        diff = (peft_model(**batches[0]).logits - patched(**batches[0]).logits).abs().max().item()
    peft_model.train(), patched.train()
    out(f"eval-mode logits, max |patched - unpatched| = {diff:.2e}")

    times = time_interleaved({"peft": peft_model, "fastpeft": patched}, batches, steps)
    header = ("step", "loss peft", "loss fastpeft", "ms peft", "ms fastpeft")
    out("{:>4}  {:>10}  {:>13}  {:>8}  {:>11}".format(*header))
    for i in range(steps):
        row = [times[k].losses[i] for k in times] + [1e3 * times[k].seconds[i] for k in times]
        out(f"{i:>4}  {row[0]:>10.4f}  {row[1]:>13.4f}  {row[2]:>8.1f}  {row[3]:>11.1f}")
    speedup = times["peft"].median_s / times["fastpeft"].median_s
    out(
        f"median step: peft {1e3 * times['peft'].median_s:.1f} ms, fastpeft "
        f"{1e3 * times['fastpeft'].median_s:.1f} ms ({speedup:.2f}x) on {device.type}, "
        f"{batch_size}x{seq_len} tokens, LoRA r={rank} dropout={dropout} "
        "(losses differ only through dropout's random streams)"
    )
    return {"report": report, "max_logit_diff": diff, "times": times, "speedup": speedup}
