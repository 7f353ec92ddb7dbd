"""A pickle reader that builds plain data only: bytes, numpy arrays and scalars of plain dtypes, lists,
tuples, bools and numbers. Used for insightface ``.bin`` pair files (``pairs_bin``), which are pickles.

Pickles can run code (any global a file names is called), so this unpickler resolves a handful of globals,
each to a checked stand-in, and refuses every other one before anything is built.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

__all__ = ["RefusedPickle", "restricted_loads"]

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


class RefusedPickle(Exception):
    """A disallowed global or argument (the caller turns it into an UnsafeFileError naming the file)."""


def _plain(dtype: object) -> np.dtype:
    if not isinstance(dtype, np.dtype) or not _plain_dtype(dtype):
        raise RefusedPickle(f"numpy data of dtype {dtype!r} (only bool, int, uint, float and bytes dtypes are allowed)")
    return dtype


def _plain_dtype(dtype: np.dtype) -> bool:
    return dtype.kind in _PLAIN_KINDS and dtype.fields is None and dtype.subdtype is None and not dtype.hasobject


def _checked_dtype(obj: object, align: object = False, copy: object = True) -> np.dtype:
    # numpy pickles a dtype as dtype("u1", False, True) + BUILD(state) (Python 2: dtype("u1", 0, 1));
    # copy=True keeps BUILD off the shared built-in descriptor
    if not isinstance(obj, (str, bytes)) or align not in (0, 1) or len(obj) > 8:
        raise RefusedPickle(f"numpy.dtype({obj!r}) (only bool, int, uint, float and bytes dtypes are allowed)")
    code = obj.decode("ascii", "replace") if isinstance(obj, bytes) else obj
    try:
        dtype = np.dtype(code, False, True)
    except TypeError:
        raise RefusedPickle(f"numpy.dtype({obj!r})") from None
    return _plain(dtype)


def _checked_reconstruct(cls: object, shape: object, typecode: object) -> np.ndarray:
    # numpy's ndarray.__reduce__: _reconstruct(ndarray, (0,), b"b") then BUILD(version, shape, dtype, fortran, data)
    if cls is not _NDARRAY or not isinstance(shape, tuple) or typecode not in (b"b", "b"):
        raise RefusedPickle(f"numpy _reconstruct{(cls, shape, typecode)!r}")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _checked_scalar(dtype: object, data: object = None) -> np.generic:
    # numpy scalars pickle as multiarray.scalar(dtype, raw bytes)
    dtype = _plain(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise RefusedPickle(f"numpy scalar of {dtype} from {type(data).__name__}")
    return np.frombuffer(data, dtype=dtype)[0]


def _checked_frombuffer(buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
    # numpy at pickle protocol 5 (buffers in band): numeric._frombuffer(buf, dtype, shape, order)
    dtype = _plain(dtype)
    if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)):
        raise RefusedPickle(f"numpy _frombuffer of a {type(buffer).__name__}")
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape) or order not in ("C", "F"):
        raise RefusedPickle("numpy _frombuffer with a bad shape/order")
    flat = np.frombuffer(bytes(buffer), dtype=dtype)
    return flat.reshape(shape, order=order).copy()


def _checked_codecs_encode(text: object, encoding: object = "utf-8") -> bytes:
    # Python 3 pickles bytes at protocol <= 2 as _codecs.encode(latin-1 text, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedPickle(f"_codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


def _checked_bytes(*args: object) -> bytes:
    # Python 3 pickles b"" at protocol <= 2 as a call to bytes() without arguments
    if args:
        raise RefusedPickle("bytes() with arguments")
    return b""


def _checked_bytearray(*args: object) -> bytearray:
    # Python 3 pickles a bytearray at protocol <= 2 as bytearray(_codecs.encode(...)) or bytearray()
    if len(args) > 1 or (args and not isinstance(args[0], bytes)):
        raise RefusedPickle("bytearray() of anything but bytes")
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
            raise RefusedPickle(f"global {module}.{name}") from None

    def persistent_load(self, pid: object) -> object:
        raise RefusedPickle("persistent id")


def restricted_loads(data: bytes, encoding: str = "bytes") -> object:
    """Unpickle ``data`` building plain data only.

    ``encoding="bytes"`` reads Python 2's str (BINSTRING) as bytes, as the field's .bin files need.
    Raises ``RefusedPickle`` (message: what was refused, e.g. ``global os.system``) for any other global,
    argument or persistent id; a malformed pickle raises what ``pickle`` raises (EOFError,
    UnpicklingError, ...), for the caller to name the file.
    """
    return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
