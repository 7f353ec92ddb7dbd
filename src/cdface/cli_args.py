"""Options shared by `cdface` subcommands: argparse value types (a bad value is a usage error: exit 2, one line),
the help format, and the non-finite-embedding gate of every scoring command."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = [
    "positive_int",
    "nonnegative_int",
    "int_list",
    "far_list",
    "HelpFormatter",
    "add_allow_nonfinite",
    "nonfinite_exit",
    "INVALID_RESULT_EXIT",
    "subcommands",
    "subcommand_parser",
]

# Exit status when the scores were computed but are invalid (non-finite embeddings), unless allowed.
INVALID_RESULT_EXIT = 3



class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default (when it has one); descriptions wrap per line, and lines that start with
    a space (examples) are kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out = []
        for line in text.splitlines():
            if line.startswith(" ") or not line.strip():
                out.append(indent + line)
            else:
                out.append(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent))
        return "\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # argparse would print "(default: None)" / "(default: False)" for flags and unset options: noise
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        if action.help and "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def subcommands(parser: argparse.ArgumentParser, dest: str | None = None) -> argparse._SubParsersAction:
    """The sub-command table of ``parser``, made on first use (argparse allows one per parser), so that
    several areas can add sub-commands to one command (``cdface models import`` is added by inference/)."""
    for action in parser._actions:  # argparse keeps the table among the parser's actions
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=dest, metavar="SUBCOMMAND")


def subcommand_parser(subparsers: argparse._SubParsersAction, *names: str) -> argparse.ArgumentParser:
    """The parser of an already registered command, e.g. ``("data", "pack")`` for ``cdface data pack``: an
    area higher in the pipeline extends a lower area's command (detect/ adds ``--detect`` to ``data pack``)
    without the lower one importing it. KeyError when a name is not registered (a wiring bug)."""
    parser = subparsers.choices[names[0]]
    for name in names[1:]:
        parser = subcommands(parser).choices[name]
    return parser


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, k, folds)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def output_file(text: str) -> str:
    """A file to write (``--out x.npy``): refused at once, before any work, when it names an existing folder or
    lies under an existing file.

    A folder is not silently turned into ``<folder>.npy`` beside it, nor found unwritable after the work.
    """
    if text and os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"names the file to write, but {text} is a folder (give a file in it)")
    _refuse_file_above(text)
    return text


def output_folder(text: str) -> str:
    """A folder to write into (``--out results/``): refused at once when it, or a folder above it, is an existing
    file (an evaluation would otherwise run for hours and then fail to write its results)."""
    if text and os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"names the folder to write into, but {text} is a file")
    _refuse_file_above(text)
    return text


def _refuse_file_above(text: str) -> None:
    parent = os.path.dirname(os.path.abspath(text))
    while parent and not os.path.exists(parent):  # the folders to create: none of them may be a file
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"cannot write {text}: {parent} is a file, not a folder")


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (worker counts, seeds)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """'10,100,1000' -> (10, 100, 1000); empty text -> (); every value must be positive."""
    values = tuple(_int(v.strip()) for v in text.split(",") if v.strip())
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be positive integers separated by commas, got {text!r}")
    return values


def far_list(text: str) -> tuple[float, ...]:
    """'1e-4,1e-5' -> (1e-4, 1e-5): false accept rates in (0, 1], in the order given, duplicates dropped."""
    out: list[float] = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"FAR values must be numbers such as 1e-4, got {item!r}") from None
        if not 0.0 < value <= 1.0:
            raise argparse.ArgumentTypeError(f"a FAR must be in (0, 1], got {item!r}")
        if value not in out:
            out.append(value)
    if not out:
        raise argparse.ArgumentTypeError("give at least one FAR, e.g. 1e-4,1e-5")
    return tuple(out)


def far_value(text: str) -> float:
    """One false accept rate in (0, 1] (as one element of ``far_list``)."""
    values = far_list(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"give one FAR such as 1e-3, got {text!r}")
    return values[0]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def add_allow_nonfinite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help=f"exit 0 even when some embeddings are NaN/inf (the result is still marked \"valid\": false); "
        f"without it such a run exits {INVALID_RESULT_EXIT}",
    )


def nonfinite_exit(command: str, counts: dict[str, tuple[int, int]], allow: bool) -> int:
    """Report non-finite embeddings per target ({name: (bad rows, rows)}); the exit status to return.

    Prints one line per affected target on stderr; 0 when none is affected or `allow`, else
    INVALID_RESULT_EXIT.
    """
    bad = {name: c for name, c in counts.items() if c[0] > 0}
    for name, (n_bad, n_all) in bad.items():
        kind = "warning" if allow else "error"
        print(
            f"cdface {command}: {kind}: {name}: {n_bad} of {n_all} embeddings are non-finite (NaN/inf); "
            "the result is invalid (marked \"valid\": false)"
            + ("" if allow else "; check the model's weights, or pass --allow-nonfinite to accept it"),
            file=sys.stderr,
        )
    return INVALID_RESULT_EXIT if bad and not allow else 0
