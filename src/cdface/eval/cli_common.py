"""What every `cdface score` protocol shares: the ``--out`` option, .npy loading and the JSON output.

Used by `cli.py` (pairs, ijb, megaface) and `cli_protocols.py` (identification, erc, rfw), so each
protocol reads its arrays and prints its result the same way, and neither command module imports the other.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from cdface.cli_args import nonfinite_exit, output_file
from cdface.errors import FormatError
from cdface.files import atomic_write

__all__ = ["add_out", "emit_result", "load_array", "nonfinite_counts"]


def add_out(parser: argparse.ArgumentParser) -> None:
    """``--out FILE``: also write the JSON result to this file (atomically)."""
    parser.add_argument("--out", type=output_file, help="also write the JSON to this file")


def load_array(path: str | Path, what: str, devkit: bool = False) -> np.ndarray:
    """A .npy array (no pickles); with `devkit`, a MegaFace devkit OpenCV matrix file for any other suffix.

    ``FormatError`` naming the file (and ``what`` it should hold) for a missing or unreadable file.
    """
    from cdface.eval.feature_files import load_npy

    path = Path(path)
    if not path.is_file():
        raise FormatError(path, None, f"{what}: file not found")
    if path.suffix == ".npy" or not devkit:
        return load_npy(path, what)
    from cdface.eval.megaface_io import read_opencv_matrix

    return read_opencv_matrix(path)


def emit_result(result: dict[str, Any], out: str | None, nonfinite: dict[str, tuple[int, int]], allow: bool) -> int:
    """Print (and write to ``out``) the result, marked invalid when features were non-finite; the exit status.

    ``nonfinite`` maps an input's name to ``(rows with NaN/inf, rows)`` (see ``nonfinite_counts``).
    """
    if nonfinite:
        bad = sum(c[0] for c in nonfinite.values())
        result = {**result, "valid": bad == 0, "nonfinite_embeddings": bad}
    text = json.dumps(result, sort_keys=True, indent=2, allow_nan=False)
    print(text)
    if out:
        atomic_write(out, text + "\n")
    return nonfinite_exit("score", nonfinite, allow)


def nonfinite_counts(**arrays: np.ndarray | None) -> dict[str, tuple[int, int]]:
    """``{name: (rows with a NaN/inf, rows)}`` for each array given (``None`` ones are skipped)."""
    from cdface.eval.verification import count_nonfinite_rows

    return {name: (count_nonfinite_rows(a), len(a)) for name, a in arrays.items() if a is not None}
