"""The `cdface` command. Each area registers its own subcommands (`<area>/cli.py: register`); this file wires
them, gives every parser the same help format, and turns user mistakes into one-line errors."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterator, Sequence

from cdface import __version__
from cdface.cli_args import HelpFormatter
from cdface.errors import CdfaceError

# Each module defines `register(subparsers)`, adding subcommands with `set_defaults(func=handler)`,
# where `handler(args) -> int`. Order matters: an area may extend a command of an area registered before it
# (detect/ adds `--detect` to `data pack`; inference/ adds `models import`), never the reverse.
_COMMAND_MODULES = (
    "cdface.models.cli",
    "cdface.data.cli",
    "cdface.detect.cli",
    "cdface.train.cli",
    "cdface.eval.cli",
    "cdface.inference.cli",
    "cdface.parallel.cli",
)

_DESCRIPTION = (
    "Train and evaluate face recognition models: ArcFace-family margin losses and the closeness & diversity "
    "method (ACCV 2022), evaluation that reproduces insightface's numbers (LFW-family .bin, IJB-B/C, MegaFace), "
    "feature extraction, 1:1 comparison, search and ONNX export."
)

_EPILOG = """\
examples:
  cdface quickstart --scale 0.2                        the whole pipeline on synthetic faces (CPU)
  cdface train configs/ms1mv2_r100_arcface.yaml data.path=/data/faces_emore
  cdface eval --model runs/x --targets lfw,cfp_fp --data-root /data/val --out results/
  cdface detect photos/ --json                         faces, boxes and landmarks in photos
  cdface embed photos/ --model runs/x --out feats.npy
  cdface compare a.jpg b.jpg --model runs/x --threshold-from results/results.json
Run 'cdface COMMAND --help' for a command's options."""

# Exit status of a user mistake (bad file, bad value), as argparse uses for a bad command line.
USER_ERROR_EXIT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdface", description=_DESCRIPTION, epilog=_EPILOG, formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"cdface {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for sub in _all_parsers(parser):
        sub.formatter_class = HelpFormatter  # every option shows its default
    return parser


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from _all_parsers(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # `cdface train cfg.yaml --show-config lr=0.1`: argparse ends a nargs="*" positional at the first option,
    # so overrides after an option come back unparsed; they are still overrides
    if rest and isinstance(getattr(args, "overrides", None), list) and not any(r.startswith("-") for r in rest):
        args.overrides += rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return USER_ERROR_EXIT
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's 128 + SIGINT (train adds the resume command)
        print(f"cdface {args.command}: interrupted", file=sys.stderr)
        return 130
    except CdfaceError as exc:
        print(f"cdface {args.command}: error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT
    except BrokenPipeError:  # `cdface models known | head`: the reader is gone, as for any Unix filter
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what the shell reports for a filter cut off this way
    except OSError as exc:  # a path that cannot be read or written: the user's to fix, not a bug
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"cdface {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return USER_ERROR_EXIT



def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a descriptor
        pass


if __name__ == "__main__":
    raise SystemExit(main())
