"""Fine-tune a LLaVA-shaped model like Paper A, with and without fastpeft, and compare.

Builds a LLaVA (random weights, local config: nothing is downloaded), prepares it with
`fastpeft.mllm.paper_setup` for any method × connector × location, trains it on a synthetic
image-caption dataset (coloured squares whose caption names colour and quadrant), and prints the
loss, tokens/s and peak memory of the same run unpatched (stock PEFT / eager adapters) and
patched. On a CPU each run happens in its own process and the peak memory is its resident
high-water mark above the size before the model was built; on a GPU it is
`torch.cuda.max_memory_allocated`.

    python examples/finetune_mllm.py                        # small LLaVA, LoRA, ~1 min on CPU
    python examples/finetune_mllm.py --method adapter --location mlp --no-connector
    python examples/finetune_mllm.py --size 7b --device cuda --dtype bfloat16 --batch-size 4

Dropout masks come from different random streams in PEFT and fastpeft, so the two loss curves
agree statistically, not bit for bit; pass `--dropout-off` to compare them exactly.
"""

import argparse

import torch

from fastpeft import mllm
from fastpeft.bench.finetune import DTYPES, run_isolated
from fastpeft.bench.llava_shapes import LLAVA_SIZES


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=mllm.PAPER_METHODS, default="lora")
    parser.add_argument("--location", choices=mllm.LOCATIONS, default="both")
    parser.add_argument("--no-connector", dest="connector", action="store_false")
    parser.add_argument("--size", choices=tuple(LLAVA_SIZES), default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--lr", type=float, default=None, help="default: Paper A's for --method")
    parser.add_argument("--dropout-off", action="store_true", help="eval mode: exact comparison")
    parser.add_argument("--only", choices=("unpatched", "patched"), default=None)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if args.method == "prefix" and args.location != "both":
        parser.error("--location does not apply to --method prefix")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    where = f"{args.size} LLaVA on {args.device} ({args.dtype})"
    connector = "connector tuned" if args.connector else "connector frozen"
    print(f"{args.method} at {args.location}, {connector}; {where}; {args.steps} steps")
    variants = [args.only] if args.only else ["unpatched", "patched"]
    provider = {"unpatched": "peft", "patched": "fastpeft"}
    results = {name: run_isolated(args, provider[name]) for name in variants}
    first = next(iter(results.values()))
    print(f"trainable parameters: {first['trainable']:,}")
    print("step  " + "  ".join(f"{name:>10}" for name in results))
    for step in range(0, args.steps, max(1, args.steps // 10)):
        print(f"{step:4d}  " + "  ".join(f"{r['losses'][step]:10.4f}" for r in results.values()))
    for name, r in results.items():
        print(
            f"{name:>9}: final loss {r['losses'][-1]:.4f}, {r['tokens_per_s']:,.0f} tokens/s, "
            f"peak memory {r['peak_mb']:,.0f} MiB  [{r['report']}]"
        )
    if len(results) == 2:
        plain, fused = results["unpatched"], results["patched"]
        diff = max(abs(a - b) for a, b in zip(plain["losses"], fused["losses"], strict=True))
        print(
            f"patched/unpatched: {fused['tokens_per_s'] / plain['tokens_per_s']:.2f}x tokens/s, "
            f"{fused['peak_mb'] / plain['peak_mb']:.2f}x peak memory; max |loss diff| {diff:.2e}"
        )
    return results


if __name__ == "__main__":
    main()
