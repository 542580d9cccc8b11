"""Parts 2, 4 and 5 of the proof suite: the device's ceilings, the SPIDER step against one fused
AdamW step (with a proof that fastpeft's step never waits for the host), and one LLaVA-1.5-7B
training step per method against PEFT and the frozen step."""

import torch

from ..spider import Spider
from . import e2e
from .compare import compare_groups
from .proof_budget import Deadline, Setting
from .spider_step import bench_spider_step, llama_shapes
from .suites import finish_e2e
from .timing import measured_peaks

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# e2e at 7B, bf16, sequence 2048 (a guess, not yet measured): building the shared model and one
# method's four providers, plus their interleaved steps, per decoder layer kept.
E2E_FIXED_S, E2E_PER_LAYER_S = 20.0, 2.0


def ceilings(setting: Setting, deadline: Deadline) -> dict:
    """Copy bandwidth and the 8192³ bf16 matmul (GPU): best and median of 60 calls (30 smoke)."""
    return {"peaks": measured_peaks(setting.device, quick=setting.smoke)}


def no_host_sync(shapes, dtype, device: torch.device) -> dict:
    """Steps of fastpeft's SPIDER under torch.cuda.set_sync_debug_mode("error"): any host sync
    inside a step raises, so passing steps prove there is none."""
    if device.type != "cuda":
        return {"host_sync_check": "not run: set_sync_debug_mode is CUDA-only (a CPU run)"}
    params = [torch.nn.Parameter(torch.randn(s, device=device).to(dtype)) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p).mul_(1e-3)
    spider = Spider(params)
    spider.step()  # the first step may allocate and set up; the claim is about every later one
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            spider.step()
        verdict = "passed: 3 steps ran under set_sync_debug_mode('error')"
    except RuntimeError as exc:
        verdict = f"FAILED: a step synchronised with the host: {exc}"[:400]
    finally:
        torch.cuda.set_sync_debug_mode("default")  # synchronize() itself counts as a sync
    torch.cuda.synchronize(device)
    return {"host_sync_check": verdict}


def spider(setting: Setting, deadline: Deadline) -> dict:
    """fastpeft's SPIDER step, one SpiderAdamW step and one AdamW step (fused on a GPU, foreach
    on a CPU) on 8 layers of Llama-7B's trainable tensors (1.6B elements; smoke: 1 layer at
    hidden 128)."""
    gpu = setting.device.type == "cuda"
    shapes = llama_shapes(1, 128, 344) if setting.smoke else llama_shapes(8)
    dtype = _DTYPES[setting.dtype]
    steps = 3 if setting.smoke else 10
    rows = bench_spider_step(
        shapes,
        dtype,
        setting.device,
        providers=("fastpeft", "spider_adamw", "adamw"),
        steps=steps,
        warmup=1 if setting.smoke else 2,
    )
    for row in rows:
        row.update(suite="spider", case=f"spider {row['elements']:,} elements", baseline="adamw")
    compare_groups(rows, lambda r: r["case"])
    check_shapes = llama_shapes(1) if gpu and not setting.smoke else shapes
    return {"rows": rows, **no_host_sync(check_shapes, dtype, setting.device)}


def e2e_layers(limit_s: float) -> int:
    """Decoder layers of the 7B shape that one method's measurement fits in `limit_s` (all 32
    when it fits, at least 2)."""
    return max(2, min(32, int((limit_s - E2E_FIXED_S) / E2E_PER_LAYER_S)))


class _OutOfTime(Exception):
    pass


def e2e_step(setting: Setting, deadline: Deadline) -> dict:
    """One training step per method (LoRA first) of the LLaVA-1.5-7B shape at sequence 2048,
    bf16, SDPA, Paper A's settings: frozen, peft, peft-bf16 and fastpeft, timed interleaved;
    tokens/s and peak memory. Methods after LoRA run while the budget allows."""
    args = e2e.settings(setting.device, setting.dtype, "smoke" if setting.smoke else "full")
    result: dict = {}
    if setting.smoke:
        methods = ("lora",)
    else:
        methods = e2e.METHODS
        args.reps, args.warmup = 6, 2
        args.steps = args.reps + args.warmup
        # LoRA must fit whole: the layers cut is sized for it alone.
        n = e2e_layers(deadline.left())
        args.size = "7b" if n == 32 else f"7b:{n}"
        result["decoder_layers"] = n
        if n < 32:
            result["layers_note"] = f"{n} of 32 decoder layers: what the budget allowed"
    providers = e2e.default_providers(setting.device, setting.dtype, compile_=False)
    done: list[dict] = []
    last = {"at": deadline.used()}

    def checkpoint(rows: list[dict]) -> None:
        done[:] = rows
        took = deadline.used() - last["at"]
        last["at"] = deadline.used()
        if deadline.left() < took and len({r["method"] for r in rows}) < len(methods):
            raise _OutOfTime(took)

    try:
        rows = e2e.run(args, methods, providers, checkpoint=checkpoint)
    except _OutOfTime as stop:
        rows = done
        ran = sorted({r["method"] for r in rows}, key=methods.index)
        result.update(status="partial", methods_skipped=[m for m in methods if m not in ran])
        result["reason"] = (
            f"out of budget after {', '.join(ran)} ({deadline.left():.0f} s left, "
            f"a method took {stop.args[0]:.0f} s)"
        )
    finish_e2e(rows)
    result.update(rows=rows, size=args.size, prompt_tokens=args.prompt_len, reps=args.reps)
    return result
