"""insightface ``.bin`` verification pair files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...).

A .bin is a pickle of ``(images, issame)``: ``2N`` encoded images (pairs are consecutive) and ``N``
booleans. Python 2 wrote the field's files (protocol 2, images as BINSTRING, so they load with
``encoding="bytes"``); some later files hold ``issame`` as a numpy bool array. Pickles can run code, so
loading goes through an unpickler that knows no globals except numpy's bool-array reconstructors, whose
arguments are checked.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdface.data.align import resize_bilinear
from cdface.data.decode import decode_image
from cdface.errors import FormatError, UnsafeFileError

__all__ = [
    "PairSet",
    "decode_pairs",
    "load_bin",
    "dumps_bin",
    "loads_bin",
    "make_bin_from_folder",
    "read_lfw_pairs",
    "write_bin",
]


@dataclass
class PairSet:
    """``images[2i]`` and ``images[2i+1]`` form pair ``i``; ``issame[i]`` says whether they match."""

    images: list[bytes]
    issame: np.ndarray
    path: str = "<memory>"

    def __len__(self) -> int:
        return int(self.issame.size)


# --- restricted unpickling -----------------------------------------------------------------------------

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")


def _checked_dtype(obj: object, align: object = False, copy: object = True) -> np.dtype:
    if obj not in ("b1", b"b1", "?", b"?", "bool", b"bool") or not isinstance(align, bool):
        raise _Refused(f"numpy.dtype({obj!r}) (only bool dtypes are allowed)")
    return np.dtype(np.bool_)


def _checked_reconstruct(cls: object, shape: object, typecode: object) -> np.ndarray:
    if cls is not np.ndarray or not isinstance(shape, tuple) or typecode not in (b"b", "b"):
        raise _Refused(f"numpy _reconstruct{(cls, shape, typecode)!r}")
    return np.ndarray.__new__(np.ndarray, (0,), np.bool_)


def _checked_codecs_encode(text: object, encoding: object = "utf-8") -> bytes:
    # Python 3 pickles bytes at protocol <= 2 as _codecs.encode(latin-1 text, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


def _checked_frombuffer(buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
    # numpy >= 1.x at pickle protocol 5: numpy.core.numeric._frombuffer(buf, dtype, shape, order)
    if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)) or dtype != np.dtype(np.bool_):
        raise _Refused("numpy _frombuffer of a non-bool array")
    if not isinstance(shape, tuple) or order not in ("C", "F"):
        raise _Refused("numpy _frombuffer with a bad shape/order")
    flat = np.frombuffer(bytes(buffer), dtype=np.bool_)
    return flat.reshape(shape, order=order).copy()


def _checked_empty_bytes(*args: object) -> bytes:
    # Python 3 pickles b"" at protocol <= 2 as a call to bytes() without arguments
    if args:
        raise _Refused("bytes() with arguments")
    return b""


class _Refused(Exception):
    """A disallowed global or argument; turned into UnsafeFileError with the file's name."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if module in _NUMPY_MODULES and name == "_reconstruct":
            return _checked_reconstruct
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return _checked_dtype
        if module in ("__builtin__", "builtins") and name == "bytes":
            return _checked_empty_bytes
        if module == "_codecs" and name == "encode":
            return _checked_codecs_encode
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return _checked_frombuffer
        raise _Refused(f"global {module}.{name}")

    def persistent_load(self, pid: object) -> object:
        raise _Refused("persistent id")


def _validated(obj: object, path: str) -> PairSet:
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise FormatError(path, None, "a pickled (images, issame) pair")
    images, issame = obj
    if not isinstance(images, (list, tuple)) or not all(isinstance(b, (bytes, bytearray)) for b in images):
        raise FormatError(path, None, "images: a list of encoded image bytes")
    if isinstance(issame, np.ndarray):
        if issame.dtype != np.bool_ or issame.ndim != 1:
            raise FormatError(path, None, f"issame: a 1-D bool array, got {issame.dtype} {issame.shape}")
        flags = issame.copy()
    elif isinstance(issame, (list, tuple)) and all(type(v) is bool for v in issame):
        flags = np.asarray(issame, dtype=np.bool_).reshape(-1)
    else:
        raise FormatError(path, None, "issame: a list of bools or a bool array")
    if len(images) != 2 * flags.size:
        raise FormatError(path, None, f"2 images per pair: {len(images)} images for {flags.size} pairs")
    return PairSet([bytes(b) for b in images], flags, path)


def loads_bin(data: bytes, path: str = "<memory>") -> PairSet:
    """Parse .bin bytes (see ``load_bin``)."""
    unpickler = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes")
    try:
        obj = unpickler.load()
    except _Refused as exc:
        raise UnsafeFileError(f"{path}: refusing to unpickle {exc}: a .bin holds only images and flags") from None
    except Exception as exc:  # any malformed pickle: EOFError, UnpicklingError, TypeError, MemoryError, ...
        raise FormatError(path, None, f"a valid pickle of (images, issame) ({type(exc).__name__}: {exc})") from None
    return _validated(obj, path)


def load_bin(path: str | os.PathLike) -> PairSet:
    """Load an insightface .bin safely: only lists/tuples of bytes, bools and numpy bool arrays."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(path, None, f"a readable .bin file ({exc.strerror})") from None
    return loads_bin(data, str(path))


def dumps_bin(images: Sequence[bytes], issame: Sequence[bool] | np.ndarray) -> bytes:
    """The pickle Python 2 wrote for ``(list_of_str, list_of_bool)`` at protocol 2, byte for byte.

    Python 3's pickler would store bytes at protocol 2 as ``_codecs.encode(...)`` calls; the field's files
    (and readers that only know them) use BINSTRING, so the opcodes are emitted directly.
    """
    flags = [bool(v) for v in np.asarray(issame, dtype=bool).reshape(-1)]
    if len(images) != 2 * len(flags):
        raise ValueError(f"need 2 images per pair: {len(images)} images for {len(flags)} pairs")
    memo = iter(range(2 * len(flags) + 3))

    def put() -> bytes:
        i = next(memo)
        return b"q" + struct.pack("<B", i) if i < 256 else b"r" + struct.pack("<I", i)

    out = [b"\x80\x02", b"]", put(), b"("]
    for data in images:
        out += [b"T", struct.pack("<i", len(data)), bytes(data), put()]
    out += [b"e", b"]", put(), b"("]
    out += [b"\x88" if flag else b"\x89" for flag in flags]
    out += [b"e", b"\x86", put(), b"."]
    return b"".join(out)


def write_bin(path: str | os.PathLike, images: Sequence[bytes], issame: Sequence[bool] | np.ndarray) -> Path:
    """Write a .bin like the field's files (see ``dumps_bin``)."""
    data = dumps_bin(images, issame)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- LFW pairs.txt -----------------------------------------------------------------------------------------


def read_lfw_pairs(pairs_txt: str | os.PathLike) -> list[tuple[str, int, str, int]]:
    """Parse LFW's pairs.txt: optional ``folds count`` header, ``name i j`` and ``name1 i name2 j`` lines."""
    pairs: list[tuple[str, int, str, int]] = []
    lines = Path(pairs_txt).read_text(encoding="utf-8").splitlines()
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


def _lfw_file(root: Path, name: str, number: int) -> Path:
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
            file = _lfw_file(root, name, idx)
            try:
                data = file.read_bytes()
            except OSError:
                raise FormatError(pairs_txt, f"pair {number}", f"an existing image {file}") from None
            decode_image(data, file)  # refuse undecodable files now, not at evaluation time
            images.append(data)
        issame.append(n1 == n2)
    return write_bin(out, images, issame)


# --- decoding ----


def decode_pairs(pairset: PairSet, size: int = 112, num_threads: int | None = None) -> np.ndarray:
    """All images as uint8 (2N, size, size, 3) RGB, decoded by a thread pool (the decoder drops the GIL)."""
    out = np.empty((len(pairset.images), size, size, 3), dtype=np.uint8)

    def work(i: int) -> None:
        image = decode_image(pairset.images[i], pairset.path, f"image {i}")
        if image.shape[:2] != (size, size):
            image = resize_bilinear(image, size, size)
        out[i] = image

    workers = num_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(work, range(len(pairset.images)), chunksize=64):
            pass
    return out
