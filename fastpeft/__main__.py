"""Command line (also `python -m fastpeft`): `fastpeft bench` (how much faster and lighter than
HF PEFT on this machine), `fastpeft env` (what this machine can run), `fastpeft demo`."""

import argparse
import sys
import warnings
from pathlib import Path

from . import __version__
from .env import bench_out_dir


class _DEFAULTS(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" to every flag's help, except where the default is None (chosen
    at run time): those flags say what happens without them in their own help."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastpeft", description=__doc__, formatter_class=_DEFAULTS
    )
    parser.add_argument("--version", action="version", version=f"fastpeft {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train a tiny LLaVA with PEFT LoRA, unpatched vs fastpeft-patched",
        formatter_class=_DEFAULTS,
    )
    demo.add_argument("--steps", type=int, default=8, help="training steps")
    demo.add_argument("--hidden-size", type=int, default=256, help="text model hidden size")
    demo.add_argument("--layers", type=int, default=2, help="decoder layers")
    demo.add_argument("--seq-len", type=int, default=128, help="tokens per sample")
    demo.add_argument("--batch-size", type=int, default=2, help="samples per step")
    demo.add_argument("--rank", type=int, default=16, help="LoRA rank")
    demo.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout")
    demo.add_argument(
        "--backend", choices=["auto", "triton", "torch"], default="auto", help="fastpeft backend"
    )
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    _bench_parser(commands)
    env = commands.add_parser(
        "env",
        help="versions, device, usable backends, optional parts",
        formatter_class=_DEFAULTS,
    )
    env.add_argument("--json", action="store_true", help="print JSON instead of a listing")
    return parser


def _bench_parser(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="benchmark fastpeft against HF PEFT on this machine (JSON, CSV, plots)",
        description="Benchmark fastpeft against HF PEFT on this machine. Providers are timed "
        "interleaved; every speedup is the median of per-repetition ratios against the named "
        "baseline with its p20-p80 spread. Results are written after each suite.",
        formatter_class=_DEFAULTS,
    )
    bench.set_defaults(bench_parser=bench)  # for errors that name "fastpeft bench"
    bench.add_argument(
        "--suite",
        choices=["layers", "e2e", "spider", "all", "proof", "static"],
        default="all",
        help="what to run; proof: the GPU proof kit (gpu tests, ceilings, headline layers, "
        "SPIDER, e2e, summary.md with every target's verdict) under --budget; static: no GPU "
        "needed: every launch of the headline cases compiled for --arch, inspected and costed "
        "by a model (predictions, never measurements; --quick: one case per method)",
    )
    bench.add_argument(
        "--arch",
        choices=["sm_90", "sm_80"],
        default="sm_90",
        help="the architecture --suite static compiles for and models",
    )
    level = bench.add_mutually_exclusive_group()
    level.add_argument(
        "--full",
        dest="level",
        action="store_const",
        const="full",
        help="the full shapes (on a GPU: LLaVA-1.5-7B, layers at M=8192); default on a GPU",
    )
    level.add_argument(
        "--quick",
        dest="level",
        action="store_const",
        const="quick",
        help="CPU-sized shapes, minutes on a 2-core CPU; default on a CPU",
    )
    level.add_argument(
        "--smoke",
        dest="level",
        action="store_const",
        const="smoke",
        help="seconds: checks the command works (never the default)",
    )
    bench.add_argument(
        "--out",
        type=Path,
        default=Path(bench_out_dir() or "bench-results"),
        help="output directory: an existing one, or a new one in an existing directory "
        "($OUT when set)",
    )
    bench.add_argument(
        "--budget",
        type=float,
        default=420.0,
        help="seconds the proof suite may take in all (--suite proof only); later parts are "
        "skipped, and say so, when it runs out",
    )
    bench.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="default: bfloat16 on a GPU, float32 on a CPU",
    )
    bench.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    bench.add_argument(
        "--compile",
        dest="compile_",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="include the torch.compile providers (default: on a GPU only)",
    )


def _bench(args) -> int:
    from .bench.cli import run_bench
    from .bench.validate import bench_errors, proof_errors

    errors = bench_errors(args.out, args.device, args.dtype)
    if args.suite == "proof":
        errors += proof_errors(args.level, args.device, args.budget)
    if errors:  # before any work: a bad --out found after the run would waste the run
        args.bench_parser.error("; ".join(errors))
    try:
        if args.suite == "static":
            return _static(args)
        if args.suite == "proof":
            from .bench.proof import run_proof

            run_proof(args.out, args.budget, args.level == "smoke", args.device, args.dtype)
            return 0
        run_bench(args.suite, args.level, args.out, args.dtype, args.device, args.compile_)
    except KeyboardInterrupt:
        return 130
    return 0


def _static(args) -> int:
    from .env import triton_interpret

    if triton_interpret():
        args.bench_parser.error(
            "--suite static compiles for a GPU: unset TRITON_INTERPRET (it turns every kernel "
            "into an interpreted one)"
        )
    from .env import static_cache_dir
    from .static.suite import file_name, format_static, run_static

    cache = static_cache_dir()
    result = run_static(args.arch, args.out, args.level in ("quick", "smoke"), cache=cache)
    print(format_static(result))
    print(f"\nwritten: {args.out / file_name(args.arch)} ({result['seconds']} s; compiles "
          f"cached in {cache})")  # fmt: skip
    return 0


def _env(args) -> None:
    import json

    from .bench.environment import report

    info = report()
    if args.json:
        print(json.dumps(info, indent=2))
        return
    problems = info.pop("warnings")
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key.ljust(width)}  {', '.join(value) if isinstance(value, list) else value}")
    for line in problems:
        print(f"warning: {line}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # transformers warns about its own deprecated API when PEFT wraps a model: noise here.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    if args.command == "bench":
        return _bench(args)
    if args.command == "env":
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
