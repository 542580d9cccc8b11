"""GPU benchmark: one bottleneck adapter (and LLaVA's gate/up pair), forward + backward.

Target (SPEC §3, Paper A's adapters): at M=8192, d=4096, H=256 with bf16 activations the fused
adapter's forward+backward is >= 2x faster than the eager PyTorch reference. Cases: bf16 adapters
and fp32 adapters (fastpeft's default, as PEFT keeps its adapters), tanh as in Paper A, dropout 0
and 0.05, a single pre/post-adapter and the gate/up pair. Writes
benchmarks/results/gpu_adapter_layer.json with the device name. Needs a CUDA GPU.

    python benchmarks/gpu_adapter_layer.py            # every case
    python benchmarks/gpu_adapter_layer.py --quick    # smoke run on CPU (PyTorch path, tiny shapes)
"""

import argparse
import json
from pathlib import Path

import torch

from fastpeft.bench import environment
from fastpeft.bench.adapter_layer import bench_adapter_layer

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_adapter_layer.json"
SHAPE = dict(M=8192, d=4096, H=256)
CASES = [
    dict(w_dtype=torch.bfloat16, dropout=0.0),
    dict(w_dtype=torch.bfloat16, dropout=0.05),
    dict(w_dtype=torch.float32, dropout=0.05),
    dict(w_dtype=torch.bfloat16, dropout=0.05, pair=True),
    dict(w_dtype=torch.float32, dropout=0.05, pair=True),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny CPU smoke run, no result file")
    args = parser.parse_args()
    if args.quick:
        for case in CASES:
            quick = dict(case, M=64, d=48, H=16, dtype=torch.float32, w_dtype=torch.float32)
            row = bench_adapter_layer(**quick, device="cpu", backend="torch", compiled=False)
            print(json.dumps(row))
        return
    if not torch.cuda.is_available():
        raise SystemExit("gpu_adapter_layer.py needs a CUDA GPU (or --quick)")
    rows = []
    for case in CASES:
        row = bench_adapter_layer(**SHAPE, **case)
        print(json.dumps(row))
        rows.append(row)
    environment.write_result(RESULTS, "gpu_adapter_layer", torch.device("cuda"), rows)


if __name__ == "__main__":
    main()
