"""``v4-ascend``: the command-line entry point. Each subcommand is one module with ``register()``."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules under v4_ascend.cli, in help order.
COMMANDS = ("info", "check", "bench", "run", "memory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="v4-ascend", description=__doc__.splitlines()[0].strip("`: "))
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"v4_ascend.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what a subcommand re-executes with when it must restart the process
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
