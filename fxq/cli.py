"""The ``fxq`` command: one subcommand per tool in ``fxq.tools``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fxq", description="FX graph-mode quantization for PyTorch")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train a small CNN on the digits data set, quantize it, report")
    demo.add_argument("--epochs", type=int, default=8, help="training epochs for the float model")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from fxq.tools.demo import run_demo

        return run_demo(epochs=args.epochs, seed=args.seed)
    return 2


if __name__ == "__main__":
    sys.exit(main())
