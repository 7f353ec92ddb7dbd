"""LFW's pairs.txt, and a ``.bin`` pair file built from an image folder in LFW's naming.

pairs.txt (http://vis-www.cs.umass.edu/lfw/pairs.txt): an optional ``folds count`` header line, then
``name i j`` (a genuine pair) and ``name1 i name2 j`` (an impostor pair) lines; image ``i`` of ``name`` is
``name/name_%04d.jpg``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cdface.data.decode import decode_image
from cdface.data.pairs_bin import write_bin
from cdface.errors import FormatError
from cdface.files import TEXT_ENCODING

__all__ = ["lfw_image_path", "make_bin_from_folder", "read_lfw_pairs"]


def read_lfw_pairs(pairs_txt: str | os.PathLike) -> list[tuple[str, int, str, int]]:
    """Parse LFW's pairs.txt: optional ``folds count`` header, ``name i j`` and ``name1 i name2 j`` lines."""
    pairs: list[tuple[str, int, str, int]] = []
    lines = Path(pairs_txt).read_text(encoding=TEXT_ENCODING).splitlines()
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if number == 1 and all(f.isdigit() for f in fields) and len(fields) <= 2:
            continue  # "10 300" header
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            pairs.append((fields[0], int(fields[1]), fields[0], int(fields[2])))
        elif len(fields) == 4 and fields[1].isdigit() and fields[3].isdigit():
            pairs.append((fields[0], int(fields[1]), fields[2], int(fields[3])))
        else:
            raise FormatError(pairs_txt, f"line {number}", f"'name i j' or 'name1 i name2 j', got {line[:100]!r}")
    return pairs


def lfw_image_path(root: Path, name: str, number: int) -> Path:
    """``root/name/name_%04d.jpg``; ``FormatError`` for a name that is not one plain folder name."""
    if not re.fullmatch(r"[^/\\]+", name) or name in (".", ".."):
        raise FormatError(root, None, f"a plain identity folder name, got {name!r}")
    return root / name / f"{name}_{number:04d}.jpg"


def make_bin_from_folder(root: str | os.PathLike, pairs_txt: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Build a .bin from aligned images ``root/name/name_%04d.jpg`` and an LFW-format pairs.txt."""
    root = Path(root)
    images: list[bytes] = []
    issame: list[bool] = []
    for number, (n1, i1, n2, i2) in enumerate(read_lfw_pairs(pairs_txt), start=1):
        for name, idx in ((n1, i1), (n2, i2)):
            file = lfw_image_path(root, name, idx)
            try:
                data = file.read_bytes()
            except OSError:
                raise FormatError(pairs_txt, f"pair {number}", f"an existing image {file}") from None
            decode_image(data, file)  # refuse undecodable or oversized files now, not at evaluation time
            images.append(data)
        issame.append(n1 == n2)
    return write_bin(out, images, issame)
