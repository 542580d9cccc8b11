"""CPU benchmark: one training step of a small LLaVA-shaped model, PEFT LoRA vs fastpeft-patched.

LLaVA layout (CLIP tower + projector + Llama LM), hidden 512, 4 decoder layers, 2 x 256 tokens,
LoRA with dropout 0.05 on every LLM linear, AdamW. The two models start identical; steps are
interleaved and the median is reported. Writes benchmarks/results/cpu_train_step.json.

    python benchmarks/cpu_train_step.py [--steps 30] [--ranks 16 128]
"""

import argparse
import copy
import json
import warnings
from pathlib import Path

import torch

import fastpeft
from fastpeft import testing
from fastpeft.bench import environment
from fastpeft.bench.train_step import time_interleaved

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_train_step.json"


def measure(rank: int, steps: int, hidden: int, layers: int, seq_len: int, batch: int) -> dict:
    base = testing.tiny_llava(hidden_size=hidden, num_layers=layers, vocab_size=1024, seed=0)
    peft_model = testing.make_lora_model(base, r=rank, alpha=2 * rank, dropout=0.05)
    patched = copy.deepcopy(peft_model)
    report = fastpeft.patch(patched, backend="torch")
    batches = [testing.llava_batch(peft_model, batch, seq_len, seed=i) for i in range(4)]
    times = time_interleaved({"peft": peft_model, "fastpeft": patched}, batches, steps, warmup=3)
    row = {"rank": rank, "patched_modules": len(report.patched)}
    for name, t in times.items():
        row[f"{name}_median_ms"] = round(1e3 * t.median_s, 2)
        row[f"{name}_p20_ms"] = round(1e3 * t.quantile_s(0.2), 2)
        row[f"{name}_p80_ms"] = round(1e3 * t.quantile_s(0.8), 2)
    row["speedup"] = round(times["peft"].median_s / times["fastpeft"].median_s, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    rows = []
    for rank in args.ranks:
        shape = (args.hidden_size, args.layers, args.seq_len, args.batch_size)
        row = measure(rank, args.steps, *shape)
        print(json.dumps(row))
        rows.append(row)
    settings = {
        "model": "LlavaForConditionalGeneration (tiny CLIP + Llama), random weights",
        "hidden_size": args.hidden_size,
        "layers": args.layers,
        "tokens": f"{args.batch_size}x{args.seq_len}",
        "lora": "all LLM linears, alpha=2r, dropout 0.05, fp32",
        "optimizer": "AdamW (foreach)",
        "steps": args.steps,
        "backend": "torch",
    }
    environment.write_result(
        args.out, "cpu_train_step", torch.device("cpu"), rows, settings=settings
    )


if __name__ == "__main__":
    main()
