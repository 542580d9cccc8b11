"""GPU benchmark: one IA3 linear, forward + backward, bf16, fp32 vectors (PEFT's default).

Cases at M=8192: a 4096x4096 projection with output scaling (k_proj / v_proj style) and the
11008->4096 down_proj with input scaling (feedforward). SPEC §2 puts the ideal overhead of fused
IA3 over the frozen base linear at about 0. Writes benchmarks/results/gpu_ia3_layer.json with the
device name. Needs a CUDA GPU.

    python benchmarks/gpu_ia3_layer.py
"""

import json
from pathlib import Path

import torch

from fastpeft.bench import environment
from fastpeft.bench.ia3_layer import bench_ia3_layer

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_ia3_layer.json"
CASES = [
    dict(M=8192, K=4096, N=4096, feedforward=False),
    dict(M=8192, K=11008, N=4096, feedforward=True),
]


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("gpu_ia3_layer.py needs a CUDA GPU")
    rows = []
    for case in CASES:
        row = bench_ia3_layer(**case)
        print(json.dumps(row))
        rows.append(row)
    environment.write_result(RESULTS, "gpu_ia3_layer", torch.device("cuda"), rows)


if __name__ == "__main__":
    main()
