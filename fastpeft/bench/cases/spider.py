"""SPIDER's bench case, in the spider suite (fastpeft/bench/spider_step.py, run by
suites.run_spider): one importance step over a Llama-shaped set of trainable tensors, against
the reference per-tensor loop and one AdamW step; its shapes per level are plan.spider_settings'.
"""

import torch

from .. import plan
from ..proof_targets import judge_rows, rows_of

KIND = "spider"
SUITE = "spider"
VS_ADAMW = 1.10  # "about one fused AdamW step": within 10%


def cases(device: torch.device, level: str) -> list[list[tuple]]:
    """One case: the shapes of every tensor a step of the run covers."""
    shapes, _, _ = plan.spider_settings(device, level)
    return [shapes]


def proof_targets(parts: dict) -> list[dict]:
    rows = [r for r in rows_of(parts, "spider") if r["provider"] == "fastpeft"]
    return [
        judge_rows("SPIDER step vs one fused AdamW step", rows, "time_vs_adamw", VS_ADAMW, True)
    ]
