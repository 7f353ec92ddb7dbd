"""Image-list files (``.lst``/``.txt``): which image files, with which class label.

Three forms are read; the form is set by the file's first entry and every line must follow it:

- cdface's ``<path> <label>`` (whitespace-separated, the label last, so a path may hold spaces);
- mxnet's im2rec form ``<index>\\t<label>[\\t<label>...]\\t<path>`` (``tools/im2rec.py --list`` writes
  labels as floats such as ``3.000000``; with several labels the first is the class, as ``--pack-label``
  files are read);
- insightface's ``<aligned>\\t<path>\\t<label>`` (its ``face2rec2.py``): aligned must be 1; unaligned
  entries (0, followed by a box and landmarks) must be aligned first (``cdface.data.align``).

Blank lines and ``#`` comments are skipped. Anything else is a ``FormatError`` naming the file, the line
and the accepted forms. Paths are relative to ``root`` (default: the list file's folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cdface.data.image_files import list_entry
from cdface.errors import FormatError
from cdface.files import TEXT_ENCODING

__all__ = ["LIST_FORMS", "read_image_list"]

LIST_FORMS = (
    "'<path> <label >= 0>', mxnet im2rec '<index>\\t<label>[\\t<label>...]\\t<path>' "
    "or insightface '1\\t<path>\\t<label>'"
)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _class(text: str) -> int | None:
    """A class label: a non-negative integer, written as an int or an integral float (``3.000000``)."""
    value = _number(text)
    return int(value) if value is not None and value >= 0 and value == int(value) else None


def _form(fields: list[str]) -> str | None:
    if len(fields) == 2:
        return "plain"
    if len(fields) >= 3 and _number(fields[0]) is not None:
        if all(_number(f) is not None for f in fields[1:-1]) and _number(fields[-1]) is None:
            return "mxnet"
        if fields[0] in ("0", "1") and _number(fields[1]) is None and _class(fields[2]) is not None:
            return "insightface"
    return None


def _fields(line: str) -> list[str]:
    if "\t" in line:
        return [f.strip() for f in line.split("\t")]
    return line.rsplit(None, 1)


def _entry(form: str, fields: list[str]) -> tuple[str, int | None] | None:
    """(path, label) of one line in ``form``; None if the line does not follow it."""
    if form == "plain" and len(fields) == 2 and fields[0]:
        return fields[0], _class(fields[1]) if fields[1].lstrip("+").isdigit() else None
    if form == "mxnet" and _form(fields) == "mxnet":
        return fields[-1], _class(fields[1])
    if form == "insightface" and _form(fields) == "insightface":
        return fields[1], _class(fields[2])
    return None


def read_image_list(
    list_file: str | os.PathLike, root: str | os.PathLike | None = None
) -> tuple[list[Path], np.ndarray]:
    """``(paths, labels int64)`` of an image list in one of the three forms (see the module docstring)."""
    list_path = Path(list_file)
    base = Path(root) if root is not None else list_path.parent
    try:
        text = list_path.read_text(encoding=TEXT_ENCODING)
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(list_path, None, f"a readable UTF-8 text file ({exc})") from None
    paths: list[Path] = []
    labels: list[int] = []
    form: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = _fields(stripped)
        form = form or _form(fields)
        entry = _entry(form, fields) if form else None
        if entry is None or entry[1] is None:
            shown = f"{form} form" if form else "one of the forms"
            raise FormatError(list_path, f"line {number}", f"{shown}: {LIST_FORMS}; got {line[:100]!r}")
        if form == "insightface" and fields[0] != "1":
            raise FormatError(
                list_path,
                f"line {number}",
                "aligned entries (insightface '1\\t<path>\\t<label>'); this one is unaligned (0, box and "
                "landmarks follow): align the faces first",
            )
        paths.append(base / list_entry(entry[0]))
        labels.append(entry[1])
    if not paths:
        raise FormatError(list_path, None, f"at least one entry in one of the forms {LIST_FORMS}")
    return paths, np.asarray(labels, dtype=np.int64)
