"""The ``alignlab`` command line: ``alignlab demo`` and ``alignlab rules``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alignlab.data.errors import DatasetError

PROG = "alignlab"


def positive_int(text: str) -> int:
    """argparse type for an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    from alignlab.demo import run_demo

    run_demo(epochs=args.epochs, data_dir=args.data_dir)
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from alignlab.rules import available

    for name in available():
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Feedback-alignment learning rules for PyTorch."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="train an MLP on Fashion-MNIST with backprop and with feedback alignment"
    )
    demo.add_argument(
        "--epochs",
        type=positive_int,
        default=2,
        metavar="N",
        help="training epochs per rule (default: 2)",
    )
    demo.add_argument(
        "--data-dir",
        default=None,
        metavar="D",
        help="directory holding the Fashion-MNIST IDX files "
        "(default: search $ALIGNLAB_DATA, /usr/share/datasets, the user cache)",
    )
    demo.set_defaults(handler=cmd_demo)

    rules = commands.add_parser("rules", help="list the available learning rules")
    rules.set_defaults(handler=cmd_rules)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DatasetError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
