"""insightface ``.bin`` verification pair files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...).

A .bin is a pickle of ``(images, issame)``: ``2N`` encoded images (pairs are consecutive) and ``N``
booleans. Python 2 wrote the field's files (protocol 2, images as BINSTRING, so they load with
``encoding="bytes"``); other tools pickle ``cv2.imencode`` output (uint8 arrays of shape (nbytes, 1)) at
the highest protocol, and numpy bool or 0/1 integer arrays as ``issame``. Pickles can run code, so loading
goes through an unpickler whose only globals are checked stand-ins that build plain data.
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

from cdface.data.align import fit_to_size
from cdface.data.decode import decode_image
from cdface.errors import FormatError, UnsafeFileError
from cdface.files import TEXT_ENCODING, atomic_write

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
#
# The unpickler resolves a handful of globals, each to a checked stand-in, so only plain data can be built:
# bytes, numpy arrays and scalars of plain dtypes (bool, int, uint, float, fixed-size bytes), and the lists,
# tuples, bools and numbers pickle builds without any global. Nothing else is callable from the file: the
# class ``numpy.ndarray`` resolves to an inert token that only ``_reconstruct`` accepts.

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC_MODULES = ("numpy.core.numeric", "numpy._core.numeric")
_PLAIN_KINDS = "biufS"  # bool, signed, unsigned, float, fixed-size bytes


class _NdarrayToken:
    """What ``numpy.ndarray`` resolves to: not callable, only recognised by ``_checked_reconstruct``."""


_NDARRAY = _NdarrayToken()


class _Refused(Exception):
    """A disallowed global or argument; turned into UnsafeFileError with the file's name."""


def _plain(dtype: object) -> np.dtype:
    if not isinstance(dtype, np.dtype) or not _plain_dtype(dtype):
        raise _Refused(f"numpy data of dtype {dtype!r} (only bool, int, uint, float and bytes dtypes are allowed)")
    return dtype


def _plain_dtype(dtype: np.dtype) -> bool:
    return dtype.kind in _PLAIN_KINDS and dtype.fields is None and dtype.subdtype is None and not dtype.hasobject


def _checked_dtype(obj: object, align: object = False, copy: object = True) -> np.dtype:
    # numpy pickles a dtype as dtype("u1", False, True) + BUILD(state) (Python 2: dtype("u1", 0, 1));
    # copy=True keeps BUILD off the shared built-in descriptor
    if not isinstance(obj, (str, bytes)) or align not in (0, 1) or len(obj) > 8:
        raise _Refused(f"numpy.dtype({obj!r}) (only bool, int, uint, float and bytes dtypes are allowed)")
    code = obj.decode("ascii", "replace") if isinstance(obj, bytes) else obj
    try:
        dtype = np.dtype(code, False, True)
    except TypeError:
        raise _Refused(f"numpy.dtype({obj!r})") from None
    return _plain(dtype)


def _checked_reconstruct(cls: object, shape: object, typecode: object) -> np.ndarray:
    # numpy's ndarray.__reduce__: _reconstruct(ndarray, (0,), b"b") then BUILD(version, shape, dtype, fortran, data)
    if cls is not _NDARRAY or not isinstance(shape, tuple) or typecode not in (b"b", "b"):
        raise _Refused(f"numpy _reconstruct{(cls, shape, typecode)!r}")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _checked_scalar(dtype: object, data: object = None) -> np.generic:
    # numpy scalars pickle as multiarray.scalar(dtype, raw bytes)
    dtype = _plain(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _Refused(f"numpy scalar of {dtype} from {type(data).__name__}")
    return np.frombuffer(data, dtype=dtype)[0]


def _checked_frombuffer(buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
    # numpy at pickle protocol 5 (buffers in band): numeric._frombuffer(buf, dtype, shape, order)
    dtype = _plain(dtype)
    if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)):
        raise _Refused(f"numpy _frombuffer of a {type(buffer).__name__}")
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape) or order not in ("C", "F"):
        raise _Refused("numpy _frombuffer with a bad shape/order")
    flat = np.frombuffer(bytes(buffer), dtype=dtype)
    return flat.reshape(shape, order=order).copy()


def _checked_codecs_encode(text: object, encoding: object = "utf-8") -> bytes:
    # Python 3 pickles bytes at protocol <= 2 as _codecs.encode(latin-1 text, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


def _checked_bytes(*args: object) -> bytes:
    # Python 3 pickles b"" at protocol <= 2 as a call to bytes() without arguments
    if args:
        raise _Refused("bytes() with arguments")
    return b""


def _checked_bytearray(*args: object) -> bytearray:
    # Python 3 pickles a bytearray at protocol <= 2 as bytearray(_codecs.encode(...)) or bytearray()
    if len(args) > 1 or (args and not isinstance(args[0], bytes)):
        raise _Refused("bytearray() of anything but bytes")
    return bytearray(args[0]) if args else bytearray()


_GLOBALS: dict[tuple[str, str], object] = {
    **{(m, "_reconstruct"): _checked_reconstruct for m in _NUMPY_MODULES},
    **{(m, "scalar"): _checked_scalar for m in _NUMPY_MODULES},
    **{(m, "_frombuffer"): _checked_frombuffer for m in _NUMERIC_MODULES},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _checked_dtype,
    ("_codecs", "encode"): _checked_codecs_encode,
    **{(m, "bytes"): _checked_bytes for m in ("__builtin__", "builtins")},
    **{(m, "bytearray"): _checked_bytearray for m in ("__builtin__", "builtins")},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"global {module}.{name}") from None

    def persistent_load(self, pid: object) -> object:
        raise _Refused("persistent id")


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
    unpickler = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes")
    try:
        obj = unpickler.load()
    except _Refused as exc:
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


# --- LFW pairs.txt -----------------------------------------------------------------------------------------


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
            decode_image(data, file)  # refuse undecodable or oversized files now, not at evaluation time
            images.append(data)
        issame.append(n1 == n2)
    return write_bin(out, images, issame)


# --- decoding ----


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
