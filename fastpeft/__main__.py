"""Command line (also `python -m fastpeft`): `fastpeft bench` (how much faster and lighter than
HF PEFT on this machine), `fastpeft env` (what this machine can run), `fastpeft demo`."""

import argparse
import sys
import warnings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastpeft", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train a tiny LLaVA with PEFT LoRA, unpatched vs fastpeft-patched"
    )
    demo.add_argument("--steps", type=int, default=8)
    demo.add_argument("--hidden-size", type=int, default=256)
    demo.add_argument("--layers", type=int, default=2)
    demo.add_argument("--seq-len", type=int, default=128)
    demo.add_argument("--batch-size", type=int, default=2)
    demo.add_argument("--rank", type=int, default=16)
    demo.add_argument("--dropout", type=float, default=0.05)
    demo.add_argument("--backend", choices=["auto", "triton", "torch"], default="auto")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    bench = commands.add_parser(
        "bench", help="benchmark fastpeft against HF PEFT on this machine (JSON, CSV, plots)"
    )
    bench.add_argument("--suite", choices=["layers", "e2e", "spider", "all"], default="all")
    level = bench.add_mutually_exclusive_group()
    level.add_argument("--quick", action="store_true", help="minutes on a 2-core CPU")
    level.add_argument("--smoke", action="store_true", help="seconds: checks the command works")
    bench.add_argument("--out", default="bench-results", help="output folder")
    bench.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    bench.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    bench.add_argument(
        "--compile",
        dest="compile_",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="include the torch.compile providers (default: on a GPU only)",
    )
    env = commands.add_parser("env", help="versions, device, usable backends, optional parts")
    env.add_argument("--json", action="store_true")
    return parser


def _bench(args) -> None:
    from pathlib import Path

    from .bench.cli import run_bench

    level = "smoke" if args.smoke else "quick" if args.quick else "full"
    run_bench(args.suite, level, Path(args.out), args.dtype, args.device, args.compile_)


def _env(args) -> None:
    import json

    from .bench.environment import report

    info = report()
    if args.json:
        print(json.dumps(info, indent=2))
        return
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key.ljust(width)}  {', '.join(value) if isinstance(value, list) else value}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # transformers warns about its own deprecated API when PEFT wraps a model: noise here.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    if args.command == "bench":
        _bench(args)
    elif args.command == "env":
        _env(args)
    elif args.command == "demo":
        from .demo import run_demo

        run_demo(
            steps=args.steps,
            hidden_size=args.hidden_size,
            num_layers=args.layers,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            rank=args.rank,
            dropout=args.dropout,
            backend=args.backend,
            device=args.device,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
