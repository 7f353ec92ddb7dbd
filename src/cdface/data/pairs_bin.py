"""insightface ``.bin`` verification pair files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...).

A .bin is a pickle of ``(images, issame)``: ``2N`` encoded images (pairs are consecutive) and ``N``
booleans. Python 2 wrote the field's files (protocol 2, images as BINSTRING, so they load with
``encoding="bytes"``); other tools pickle ``cv2.imencode`` output (uint8 arrays of shape (nbytes, 1)) at
the highest protocol, and numpy bool or 0/1 integer arrays as ``issame``. Pickles can run code, so loading
goes through ``safe_unpickle.restricted_loads``, whose only globals are checked stand-ins that build plain
data. LFW's pairs.txt and building a .bin from an image folder are in ``lfw_pairs``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdface.data.align import fit_to_size
from cdface.data.decode import decode_image
from cdface.data.safe_unpickle import RefusedPickle, restricted_loads
from cdface.errors import FormatError, UnsafeFileError
from cdface.files import atomic_write

__all__ = [
    "PairSet",
    "decode_pairs",
    "load_bin",
    "dumps_bin",
    "loads_bin",
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


def _image_bytes(item: object) -> bytes | None:
    """An encoded image as bytes: bytes/bytearray, or a uint8/int8 array of any shape (``cv2.imencode``)."""
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype in (np.uint8, np.int8):
        return item.tobytes(order="C")
    return None


def _flags(issame: object) -> np.ndarray | None:
    """issame as a bool vector: bools, numpy bools, or integers that are all 0/1 (list, tuple or 1-D array)."""
    if isinstance(issame, np.ndarray):
        if issame.ndim != 1 or issame.dtype.kind not in "biu":
            return None
        values = issame
    elif isinstance(issame, (list, tuple)):
        if not all(isinstance(v, (bool, int, np.bool_, np.integer)) for v in issame):
            return None
        values = np.asarray([int(v) for v in issame], dtype=np.int64)
    else:
        return None
    if values.dtype != np.bool_ and values.size and not np.isin(values, (0, 1)).all():
        return None
    return values.astype(np.bool_).reshape(-1)


def _validated(obj: object, path: str) -> PairSet:
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise FormatError(path, None, "a pickled (images, issame) pair")
    images, issame = obj
    if isinstance(images, np.ndarray) and images.ndim == 1 and images.dtype.kind == "S":
        images = images.tolist()  # a numpy array of byte strings
    if not isinstance(images, (list, tuple)):
        raise FormatError(path, None, f"images: a list of encoded images, got {type(images).__name__}")
    blobs = [_image_bytes(item) for item in images]
    bad = next((i for i, b in enumerate(blobs) if b is None), None)
    if bad is not None:
        got = images[bad]
        kind = f"{got.dtype} array" if isinstance(got, np.ndarray) else type(got).__name__
        raise FormatError(path, f"image {bad}", f"encoded image bytes (bytes or a uint8 array), got {kind}")
    flags = _flags(issame)
    if flags is None:
        raise FormatError(path, None, "issame: a list or 1-D array of bools (or of 0/1 integers)")
    if len(blobs) != 2 * flags.size:
        raise FormatError(path, None, f"2 images per pair: {len(blobs)} images for {flags.size} pairs")
    return PairSet(blobs, flags, path)


def loads_bin(data: bytes, path: str = "<memory>") -> PairSet:
    """Parse .bin bytes (see ``load_bin``)."""
    try:
        obj = restricted_loads(data, encoding="bytes")
    except RefusedPickle as exc:
        raise UnsafeFileError(f"{path}: refusing to unpickle {exc}: a .bin holds only images and flags") from None
    except Exception as exc:  # any malformed pickle: EOFError, UnpicklingError, TypeError, MemoryError, ...
        raise FormatError(path, None, f"a valid pickle of (images, issame) ({type(exc).__name__}: {exc})") from None
    return _validated(obj, path)


def load_bin(path: str | os.PathLike) -> PairSet:
    """Load an insightface .bin safely; ``UnsafeFileError`` for a pickle that would build anything but data.

    Accepted: any pickle protocol (0-5, buffers in band), written by Python 2 or 3, holding
    ``(images, issame)`` where images are bytes or uint8 arrays (``cv2.imencode`` output, any shape) and
    issame is a list/tuple/1-D array of bools or 0/1 integers (numpy scalars included), as insightface's
    ``load_bin`` reads them. ``FormatError`` names the file (and image index) for any other content.
    """
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
    atomic_write(path, data)
    return path


def decode_pairs(
    pairset: PairSet, size: int | tuple[int, int] = 112, num_threads: int | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """All images as uint8 (2N, H, W, 3) RGB at ``size`` ((H, W) or a square side; others resized bilinearly),
    decoded by a thread pool (the decoder drops the GIL).

    Any undecodable image, or one over the pixel cap (``decode.resolve_max_pixels(max_pixels)``), is a
    ``FormatError`` naming the file and the image index: a pair set is scored whole or not at all.
    """
    height, width = (size, size) if isinstance(size, (int, np.integer)) else size
    out = np.empty((len(pairset.images), height, width, 3), dtype=np.uint8)

    def work(i: int) -> None:
        out[i] = fit_to_size(decode_image(pairset.images[i], pairset.path, f"image {i}", max_pixels), (height, width))

    workers = num_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(work, range(len(pairset.images)), chunksize=64):
            pass
    return out
