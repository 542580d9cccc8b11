"""examples/deepspeed_lora.py through DeepSpeed's own launcher (`deepspeed --num_gpus 2`): two
ranks on DeepSpeed's CPU accelerator over gloo, ZeRO-2 and ZeRO-3, with and without SPIDER. Each
rank must have fused every patched call and end with the same adapters. (Numbers against
single-process references: tests/hardening/test_deepspeed_training.py, tests/spider/
test_deepspeed.py; these run the launcher path users run.)"""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..deepspeed_gloo import requires_deepspeed
from ..gloo import _free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "deepspeed_lora.py"
LINE = re.compile(
    r"rank (\d): loss (\S+) fused_calls (\d+) fallbacks (\d+) adapters (\d+) checksum (\S+) "
    r"spider_steps (\d+)"
)


@requires_deepspeed
@pytest.mark.slow
@pytest.mark.parametrize("stage, spider", [(2, False), (3, True)], ids=["zero2", "zero3-spider"])
def test_deepspeed_launcher_runs_the_example(stage, spider):
    argv = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2",
            "--master_port", str(_free_port()), str(EXAMPLE), "--zero-stage", str(stage),
            "--steps", "3"] + (["--spider"] if spider else [])  # fmt: skip
    env = dict(os.environ, DS_ACCELERATOR="cpu")
    # A fresh machine first JIT-compiles DeepSpeed's CPU shared-memory op (about 70 s on 2 cores).
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = {int(m[1]): m for m in LINE.finditer(done.stdout)}
    assert sorted(ranks) == [0, 1], done.stdout[-3000:]
    for m in ranks.values():
        # 14 patched LoRA linears (7 per decoder layer, 2 layers), 3 steps, every call fused.
        assert int(m[3]) == 14 * 3 and int(m[4]) == 0 and int(m[5]) == 28
        assert int(m[7]) == (3 if spider else 0)
        assert math.isfinite(float(m[2]))
    # Data-parallel ranks end with identical adapters (different batches, averaged gradients).
    assert ranks[0][6] == ranks[1][6]
