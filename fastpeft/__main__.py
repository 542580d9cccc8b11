"""Command line: `fastpeft demo` (also `python -m fastpeft demo`)."""

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        # transformers warns about its own deprecated API when PEFT wraps a model: noise here.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")

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
