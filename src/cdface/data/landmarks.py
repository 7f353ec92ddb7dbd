"""5-point landmark files: one '<image> x1 y1 ... x5 y5 [score]' line per image (IJB, MegaFace, `cdface embed`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdface.errors import FormatError
from cdface.files import TEXT_ENCODING


def read_landmark_file(path: str | Path) -> dict[str, np.ndarray]:
    """{image: (5, 2) float64}; malformed lines and non-finite coordinates name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding=TEXT_ENCODING)
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(path, None, f"a readable UTF-8 landmark file ({exc})") from exc
    table: dict[str, np.ndarray] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) not in (11, 12):
            raise FormatError(path, f"line {number}", f"'image x1 y1 ... x5 y5 [score]', got {len(parts)} fields")
        try:
            values = np.array([float(v) for v in parts[1:11]], dtype=np.float64)
        except ValueError:
            raise FormatError(path, f"line {number}", "10 numeric landmark coordinates") from None
        if not np.isfinite(values).all():
            raise FormatError(path, f"line {number}", "finite landmark coordinates")
        table[parts[0]] = values.reshape(5, 2)
    return table
