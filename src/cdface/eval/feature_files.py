"""Reading saved feature / label arrays (`.npy`) safely, with one-line errors that say what the file is."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdface.errors import FormatError

__all__ = ["load_npy"]

_NPY_MAGIC = b"\x93NUMPY"


def load_npy(path: str | Path, what: str, mmap: bool = False) -> np.ndarray:
    """A `.npy` array (never unpickled; memory-mapped with `mmap`).

    Raises FormatError naming the file when it is missing, is not a `.npy` at all (e.g. a text list passed
    where features belong), holds Python objects, or is truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, None, f"{what}: file not found")
    with open(path, "rb") as handle:
        head = handle.read(len(_NPY_MAGIC))
    if head != _NPY_MAGIC:
        hint = " (it looks like text)" if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head) else ""
        raise FormatError(path, None, f"{what}: a NumPy .npy array without pickled objects (as np.save writes "
                          f"it); this file is not a .npy at all{hint}")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise FormatError(path, None, f"{what}: a .npy array without pickled objects; this one holds Python "
                              "objects, which are never unpickled") from exc
        raise FormatError(path, None, f"{what}: a readable .npy array ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise FormatError(path, None, f"{what}: a readable .npy array ({exc})") from exc
