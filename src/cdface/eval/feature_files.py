"""Reading saved feature / label arrays (`.npy`) safely, with one-line errors that say what the file is."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdface.errors import FormatError

__all__ = ["load_npy", "genuine_flags", "integer_labels"]

_NPY_MAGIC = b"\x93NUMPY"


def load_npy(path: str | Path, what: str, mmap: bool = False) -> np.ndarray:
    """A `.npy` array of numbers: bool, int or float (never unpickled; memory-mapped with `mmap`).

    Raises FormatError naming the file when it is missing, is not a `.npy` at all (e.g. a text list passed
    where features belong), holds Python objects, is truncated, or holds anything but real numbers (strings,
    complex numbers, records), which numpy would otherwise cast silently into wrong scores.
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
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise FormatError(path, None, f"{what}: a .npy array without pickled objects; this one holds Python "
                              "objects, which are never unpickled") from exc
        raise FormatError(path, None, f"{what}: a readable .npy array ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise FormatError(path, None, f"{what}: a readable .npy array ({exc})") from exc
    if array.dtype.kind not in "biuf":
        raise FormatError(path, None, f"{what}: an array of numbers (bool, int or float), got dtype {array.dtype}")
    return array


def genuine_flags(array: np.ndarray, path: str | Path, what: str = "issame") -> np.ndarray:
    """Pair labels as bool: a bool array, or numbers that are all 0 or 1 (1 = same identity).

    Anything else (0.5, 2, -1) is a FormatError naming the file: ``astype(bool)`` would read it as "same".
    """
    if array.dtype.kind != "b":
        values = np.unique(np.asarray(array))
        if not np.isin(values, (0, 1)).all():
            bad = values[~np.isin(values, (0, 1))][:3].tolist()
            raise FormatError(path, None, f"{what}: genuine flags that are bool or 0/1, got values such as {bad}")
    return np.asarray(array).astype(bool)


def integer_labels(array: np.ndarray, path: str | Path, what: str) -> np.ndarray:
    """Identity labels as int64: integers, or floats with integer values (``3.0``); anything else is refused."""
    if array.dtype.kind not in "iu" and not (array.dtype.kind == "f" and np.all(array == np.round(array))):
        raise FormatError(path, None, f"{what}: integer identities, got dtype {array.dtype}")
    return np.asarray(array).astype(np.int64)
