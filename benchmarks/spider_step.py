"""Benchmark: per-step cost of SPIDER's spider.step() over a 7B-class set of tensors, against the
paper-style per-tensor loop and one AdamW step (fastpeft/bench/spider_step.py has the details).

GPU (default there): 32 Llama layers of 4096/11008 projections, bf16 parameters; the paper loop
(five fp32 copies per tensor: does not fit at full size) runs on --reference-layers layers and
is scaled. CPU: a scaled-down set (default 2 layers of 512/1376), bf16 and fp32. Writes
benchmarks/results/spider_step_{cuda,cpu}.json with the device name.

    python benchmarks/spider_step.py [--device cuda] [--layers 32] [--dtypes bfloat16]
"""

import argparse
import json
import os
from pathlib import Path

import torch

from fastpeft.bench import environment
from fastpeft.bench.spider_step import bench_spider_step, llama_shapes

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument("--layers", type=int, default=32 if gpu else 2)
    parser.add_argument("--hidden-size", type=int, default=4096 if gpu else 512)
    parser.add_argument("--intermediate-size", type=int, default=11008 if gpu else 1376)
    parser.add_argument("--reference-layers", type=int, default=4 if gpu else None)
    parser.add_argument(
        "--dtypes", nargs="+", default=["bfloat16"] if gpu else ["bfloat16", "float32"]
    )
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--note", default=None, help="free text stored with the results")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shapes = llama_shapes(args.layers, args.hidden_size, args.intermediate_size)
    ref_shapes = None
    if args.reference_layers:
        ref_shapes = llama_shapes(args.reference_layers, args.hidden_size, args.intermediate_size)
    rows = []
    for name in args.dtypes:
        for row in bench_spider_step(
            shapes,
            getattr(torch, name),
            device,
            reference_shapes=ref_shapes,
            steps=args.steps,
            backend=args.backend,
        ):
            print(json.dumps(row))
            rows.append(row)
    settings = {
        "layers": args.layers,
        "hidden_size": args.hidden_size,
        "intermediate_size": args.intermediate_size,
        "tensors_per_layer": "q,k,v,o,gate,up,down + 2 norms",
        "reference_layers": args.reference_layers or args.layers,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        # The CPU may be shared: the 1-minute load average at the end of the run, for context.
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if args.note:
        settings["note"] = args.note
    out = args.out or RESULTS / f"spider_step_{device.type}.json"
    environment.write_result(out, "spider_step", device, rows, settings=settings)


if __name__ == "__main__":
    main()
