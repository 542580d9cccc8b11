"""The e2e suite: one training step (forward, backward, optimizer) of a LLaVA-1.5-shaped model per
method and provider, against the frozen model's step (same model, no PEFT, input grads only),
the physical floor for PEFT training.

Methods use Paper A's settings (`mllm.paper_setup`). Providers: "peft" (stock PEFT; fastpeft's
eager adapters for "adapter"), "peft-bf16" (trained weights in the base dtype; 16-bit only),
"peft+compile", "fastpeft". Each provider's first-batch loss (dropout off) is checked against
"peft" before its figures are reported.
"""

from argparse import Namespace

import torch

from . import finetune

METHODS = ("lora", "ia3", "adapter", "prefix")


def settings(device: torch.device, dtype: str, level: str) -> Namespace:
    """Run settings for `level` ("full", "quick", "smoke"): the 7B shape at sequence 2048 on a GPU
    (image 576 + text); on a CPU the "small" LLaVA (hidden 512), "tiny" for smoke runs."""
    gpu = device.type == "cuda"
    if gpu and level != "smoke":
        size, batch, prompt, steps = "7b", 1, 2048 - 576 - 4, 10 if level == "full" else 5
    else:
        size, batch, prompt = ("tiny", 2, 32) if level == "smoke" else ("small", 2, 60)
        steps = {"full": 16, "quick": 9, "smoke": 2}[level]
    return Namespace(
        size=size,
        device=str(device),
        dtype=dtype,
        steps=steps,
        batch_size=batch,
        prompt_len=prompt,
        location="both",
        connector=True,
        lr=None,
        dropout_off=False,
        method="lora",
    )


def default_providers(device: torch.device, dtype: str, compile_: bool) -> list[str]:
    providers = ["peft"]
    if dtype != "float32":
        providers.append("peft-bf16")
    if compile_:
        providers.append("peft+compile")
    return providers + ["fastpeft"]


def run(args: Namespace, methods, providers, progress=None) -> list[dict]:
    """Rows for the frozen step and every method × provider."""
    rows = []
    frozen = finetune.run_isolated(Namespace(**{**vars(args), "method": "lora"}), "frozen")
    rows.append(_row("frozen", frozen, None, None, args))
    if progress:
        progress.update(1)
    for method in methods:
        run_args = Namespace(**{**vars(args), "method": method})
        results = {p: finetune.run_isolated(run_args, p) for p in providers}
        baseline = results.get("peft")
        rows += [_row(method, result, baseline, frozen, args) for result in results.values()]
        if progress:
            progress.update(1)
    return rows


def _row(method: str, result: dict, baseline: dict | None, frozen: dict | None, args) -> dict:
    row = {"suite": "e2e", "case": f"{args.size} llava {method}", "method": method}
    row.update(provider=result["provider"], size=args.size, dtype=args.dtype)
    row["tokens"] = result["tokens_per_step"]
    row["trainable"] = result["trainable"]
    if baseline is not None and result is not baseline:
        ref, got = baseline["check_loss"], result["check_loss"]
        limit = (1e-4 if args.dtype == "float32" else 2e-2) * abs(ref)
        if not abs(got - ref) <= limit:
            row["error"] = f"first-batch loss {got:.6g} differs from peft's {ref:.6g}"
            return row
    row.update(step_ms=result["step_ms"], tokens_per_s=result["tokens_per_s"])
    row["peak_mb"] = result["peak_mb"]
    row["patch"] = result["report"]
    if frozen is not None:
        row["fraction_of_frozen_step"] = result["step_ms"] / frozen["step_ms"]
    if baseline is not None:
        row["speedup_vs_peft"] = result["tokens_per_s"] / baseline["tokens_per_s"]
        row["memory_vs_peft"] = result["peak_mb"] / baseline["peak_mb"]
    return row
