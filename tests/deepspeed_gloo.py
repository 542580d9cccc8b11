"""DeepSpeed on the CPU processes of tests/gloo.py: what each worker sets up, and the configs.

The test modules never import deepspeed themselves (only their spawned workers do): importing it
into the pytest process would make every later `fastpeft.patch` in the suite take its DeepSpeed
branch (fastpeft/patching/zero3.py acts when deepspeed is imported), and costs ~2 s.
"""

import importlib.util
import os

import pytest

# Whole-run limit of one spawn of DeepSpeed workers (seconds): each takes 10-40 s on a 2-core VM.
TIMEOUT = 300

requires_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"
)


def setup_worker(rank: int, world: int):
    """Inside a spawned worker: the environment DeepSpeed reads, then deepspeed itself."""
    # DeepSpeed requires LOCAL_RANK (its launcher sets it) and picks its accelerator on import:
    # the CPU one, which runs its collectives over the gloo group tests/gloo.py set up.
    os.environ.update(LOCAL_RANK=str(rank), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    # The CPU accelerator JIT-compiles a shared-memory all-reduce (deepspeed_shm_comm) when the
    # engine's communication starts, ~70 s on a fresh 2-core VM (cached after that); only
    # DeepSpeed's inference all-reduce uses it, training runs on torch.distributed (gloo here).
    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible["deepspeed_shm_comm"] = False
    return deepspeed


def config(stage: int, micro_batch: int, **extra) -> dict:
    """A ZeRO-`stage` config, fp32, no gradient clipping (DeepSpeed's default clips at norm 1.0,
    which plain PyTorch does not); under ZeRO-3 no parameter is kept gathered between uses
    (DeepSpeed's default keeps every tensor under 100k elements, i.e. all of a tiny model's)."""
    zero = {"stage": stage}
    if stage == 3:
        zero.update(stage3_param_persistence_threshold=0, stage3_model_persistence_threshold=0)
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "zero_optimization": zero,
        "gradient_clipping": 0.0,
        "steps_per_print": 10**9,
        **extra,
    }
