"""MegaFace devkit files: OpenCV matrix feature files (``*.bin``), JSON feature lists, noise lists.

A devkit feature file is ``struct.pack('4i', rows, cols, stride_bytes, cv_type)`` followed by the row-major
data, where ``cv_type`` is 5 (CV_32F) or 6 (CV_64F) and ``stride_bytes = cols * element_size``. A single
embedding is stored as a column, ``rows = D, cols = 1`` (as insightface's ``gen_megaface.py`` writes it).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cdface.errors import FormatError
from cdface.files import TEXT_ENCODING

__all__ = [
    "read_opencv_matrix",
    "write_opencv_matrix",
    "read_feature_files",
    "read_noise_list",
    "read_feature_list_json",
]

_CV_TYPES = {5: np.dtype("<f4"), 6: np.dtype("<f8")}
_HEADER = struct.Struct("<4i")


def read_opencv_matrix(path: str | Path) -> np.ndarray:
    """A devkit matrix file -> (rows, cols) float32/float64 array; strict about header and size."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise FormatError(path, None, "file not found") from exc
    except OSError as exc:
        raise FormatError(path, None, f"a readable file ({exc.strerror or exc})") from exc
    if len(raw) < _HEADER.size:
        raise FormatError(path, "header", f"a {_HEADER.size}-byte header (rows, cols, stride, type)")
    rows, cols, stride, cv_type = _HEADER.unpack_from(raw)
    if cv_type not in _CV_TYPES:
        raise FormatError(path, "header", f"type 5 (CV_32F) or 6 (CV_64F), got {cv_type}")
    dtype = _CV_TYPES[cv_type]
    if rows < 0 or cols < 0 or stride != cols * dtype.itemsize:
        raise FormatError(path, "header", f"rows, cols >= 0 and stride = cols * {dtype.itemsize}, "
                          f"got rows={rows} cols={cols} stride={stride}")
    expected = _HEADER.size + rows * stride
    if len(raw) != expected:
        raise FormatError(path, "data", f"{expected} bytes for a {rows}x{cols} matrix, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=_HEADER.size).reshape(rows, cols).astype(dtype.newbyteorder("="))


def write_opencv_matrix(path: str | Path, array: np.ndarray) -> None:
    """Write a 1-D (as a column, like the devkit's features) or 2-D float32/float64 array."""
    arr = np.asarray(array)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.dtype not in (np.float32, np.float64):
        raise ValueError(f"a 1-D/2-D float32/float64 array is needed, got {arr.dtype} {arr.shape}")
    cv_type = 5 if arr.dtype == np.float32 else 6
    data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    with open(path, "wb") as f:
        f.write(_HEADER.pack(arr.shape[0], arr.shape[1], arr.shape[1] * arr.itemsize, cv_type))
        f.write(data.tobytes())


def read_feature_files(paths: Iterable[str | Path]) -> np.ndarray:
    """Stack devkit per-image feature files (each D x 1 or 1 x D) into an (N, D) array."""
    rows = []
    first: str | Path | None = None
    for p in paths:
        m = read_opencv_matrix(p)
        if 1 not in m.shape:
            raise FormatError(p, "header", f"a single feature vector (D x 1), got {m.shape}")
        row = m.reshape(-1)
        if first is None:
            first = p
        elif row.shape[0] != rows[0].shape[0]:
            raise FormatError(p, "header", f"a {rows[0].shape[0]}-dimensional feature like {Path(first).name}, "
                              f"got {row.shape[0]} dimensions")
        rows.append(row)
    if not rows:
        raise ValueError("no feature files given")
    return np.stack(rows)


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; a missing, unreadable or non-UTF-8 file is a FormatError naming it."""
    try:
        return path.read_text(encoding=TEXT_ENCODING)
    except FileNotFoundError as exc:
        raise FormatError(path, None, "file not found") from exc
    except OSError as exc:
        raise FormatError(path, None, f"a readable text file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise FormatError(path, None, f"UTF-8 text ({exc})") from exc


def read_noise_list(path: str | Path) -> set[str]:
    """A FaceScrub/MegaFace noise list: one relative image path per line; '#' lines are comments."""
    path = Path(path)
    lines = _read_text(path).splitlines()
    return {ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")}


def read_feature_list_json(path: str | Path) -> tuple[list[str], list[str] | None]:
    """A devkit list (``facescrub_features_list.json``, ``megaface_features_list.json_<size>_<set>``):
    ``{"path": [...], "id": [...]?}`` -> (paths, identity names or None)."""
    path = Path(path)
    text = _read_text(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(path, f"line {exc.lineno}", f"valid JSON ({exc.msg})") from exc
    except RecursionError:
        raise FormatError(path, None, "valid JSON (nested too deeply)") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("path"), list):
        raise FormatError(path, None, 'a JSON object with a "path" list')
    paths = obj["path"]
    ids = obj.get("id")
    if not all(isinstance(p, str) for p in paths):
        raise FormatError(path, None, '"path" entries that are strings')
    if ids is not None and (not isinstance(ids, list) or len(ids) != len(paths)):
        raise FormatError(path, None, 'an "id" list as long as "path"')
    return paths, (None if ids is None else [str(i) for i in ids])
