"""GPU benchmark for issue #2's targets: one LoRA linear, forward + backward, bf16.

Targets at M=8192, K=N=4096, r=16: fastpeft <= 1.08x the frozen base linear, and >= 1.35x faster
than PEFT (default settings: fp32 adapters). Writes benchmarks/results/gpu_lora_layer.json with
the device name. Needs a CUDA GPU.

    python benchmarks/gpu_lora_layer.py
"""

import json
from pathlib import Path

import torch

from fastpeft.bench import environment
from fastpeft.bench.lora_layer import bench_lora_layer

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_lora_layer.json"
CASES = [
    dict(M=8192, K=4096, N=4096, r=16, dropout=0.0),
    dict(M=8192, K=4096, N=4096, r=16, dropout=0.05),
    dict(M=8192, K=4096, N=11008, r=128, dropout=0.05),
    dict(M=8192, K=11008, N=4096, r=128, dropout=0.05),
]


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("gpu_lora_layer.py needs a CUDA GPU")
    rows = []
    for case in CASES:
        row = bench_lora_layer(**case)
        print(json.dumps(row))
        rows.append(row)
    environment.write_result(RESULTS, "gpu_lora_layer", torch.device("cuda"), rows)


if __name__ == "__main__":
    main()
