"""5-point landmark files: one '<image> x1 y1 ... x5 y5 [score]' line per image (IJB, MegaFace, `cdface embed`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdface.errors import FormatError
from cdface.files import TEXT_ENCODING


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_landmark_file(path: str | Path, several: bool = False) -> dict[str, np.ndarray]:
    """{image: (5, 2) float64}; malformed lines and non-finite coordinates name the file and line.

    The numbers are read from the end of the line, so an image path may hold spaces (``my photos/a.jpg x1 ...``),
    as in image lists; a line of 11 trailing numbers carries a score.

    ``several``: an image may have several lines (several faces in one photo): {image: (F, 5, 2) float64}, one
    face per distinct line in file order (a repeated identical line is one face). Without it, an image listed
    again with other points is a FormatError.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding=TEXT_ENCODING)
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(path, None, f"a readable UTF-8 landmark file ({exc})") from exc
    table: dict[str, np.ndarray] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.rsplit(None, 11)  # [name, x1 .. y5, score] when a score is there
        if len(fields) != 12 or not all(_number(v) for v in fields[1:]):
            fields = stripped.rsplit(None, 10)  # [name, x1 .. y5]
        if len(fields) < 11:
            raise FormatError(path, f"line {number}", f"'image x1 y1 ... x5 y5 [score]', got {len(stripped.split())} "
                              "fields")
        try:
            values = np.array([float(v) for v in fields[1:11]], dtype=np.float64)
        except ValueError:
            raise FormatError(path, f"line {number}", "10 numeric landmark coordinates") from None
        if not np.isfinite(values).all():
            raise FormatError(path, f"line {number}", "finite landmark coordinates")
        points = values.reshape(5, 2)
        if several:
            faces = table.get(fields[0])
            if faces is None:
                table[fields[0]] = points[None]
            elif not (faces == points).all(axis=(1, 2)).any():
                table[fields[0]] = np.concatenate([faces, points[None]])
            continue
        if fields[0] in table and not np.array_equal(table[fields[0]], points):  # which one is right?
            raise FormatError(path, f"line {number}", f"one landmark line per image; {fields[0]} is listed again "
                              "with other points")
        table[fields[0]] = points
    return table
