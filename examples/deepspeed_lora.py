"""LoRA on a LLaVA-shaped model under DeepSpeed ZeRO, patched by fastpeft, optionally with SPIDER.

Run it with DeepSpeed's launcher (on a machine without GPUs DeepSpeed's CPU accelerator runs
each rank as a process over gloo):

    deepspeed --num_gpus 2 examples/deepspeed_lora.py --zero-stage 3
    deepspeed --num_gpus 2 examples/deepspeed_lora.py --zero-stage 2 --spider

Each rank trains a tiny random-weight LLaVA (nothing downloaded; `--size small` for a bigger one)
on its own synthetic batches: the model is wrapped with PEFT LoRA, patched with
`fastpeft.patch`, handed to `deepspeed.initialize`; with `--spider`, `DeepSpeedSpider` replaces
`engine.step()`. Every rank prints its last loss, how many calls its patched layers fused and a
checksum of the trained adapters, which must agree across ranks.
"""

import argparse
import os

import torch


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zero-stage", type=int, choices=(0, 1, 2, 3), default=3)
    parser.add_argument("--spider", action="store_true", help="SPIDER via DeepSpeedSpider")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2, help="per rank")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import deepspeed

    import fastpeft
    from fastpeft import testing

    deepspeed.init_distributed(dist_backend="gloo" if not torch.cuda.is_available() else "nccl")
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if (
        torch.cuda.is_available()
    ) else torch.device("cpu")  # fmt: skip
    model = testing.make_lora_model(testing.tiny_llava().to(device), r=8, dropout=0.0)
    report = fastpeft.patch(model)
    trained = [p for p in model.parameters() if p.requires_grad]
    config = {
        "train_micro_batch_size_per_gpu": args.batch_size,
        "zero_optimization": {"stage": args.zero_stage},
        "steps_per_print": 10**9,
    }
    optimizer = torch.optim.AdamW(trained, lr=1e-3, weight_decay=0.0)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    spider = fastpeft.spider.DeepSpeedSpider(engine) if args.spider else None
    for step in range(args.steps):
        batch = testing.llava_batch(model, batch_size=args.batch_size, seed=100 * step + rank)
        loss = engine(**batch).loss
        engine.backward(loss)
        if spider is not None:
            spider.step()
        else:
            engine.step()

    usage = report.usage(model)
    fused = sum(u["fused"] for u in usage.values())
    fallbacks = sum(sum(u["fallbacks"].values()) for u in usage.values())
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    # The adapters as the engine holds them (gathered under ZeRO-3), summed in fp64.
    with deepspeed.zero.GatheredParameters(trained, enabled=args.zero_stage == 3):
        checksum = sum(float(p.detach().double().abs().sum()) for p in trained)
    spider_steps = spider.steps if spider is not None else 0
    print(
        f"rank {rank}: loss {loss.item():.6f} fused_calls {fused} fallbacks {fallbacks} "
        f"adapters {len(names)} checksum {checksum:.10e} spider_steps {spider_steps}",
        flush=True,
    )
    # Leave together and tear the process group down before exiting: a gloo group left to the
    # interpreter's exit has aborted a rank ("terminate called without an active exception").
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
