"""cdface: train and evaluate deep face representations (closeness & diversity, margin heads, protocol-exact
evaluation). Each area registers its own subcommands; this file only wires them."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cdface import __version__
from cdface.errors import CdfaceError

# Each module defines `register(subparsers)`, adding subcommands with `set_defaults(func=handler)`,
# where `handler(args) -> int`.
_COMMAND_MODULES = (
    "cdface.models.cli",
    "cdface.data.cli",
    "cdface.train.cli",
    "cdface.eval.cli",
    "cdface.inference.cli",
    "cdface.parallel.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdface", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cdface {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CdfaceError as exc:
        print(f"cdface {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
