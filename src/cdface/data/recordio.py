"""mxnet/dmlc RecordIO (.rec + .idx) read and write, without mxnet.

Layout of a .rec file: a sequence of records, each ``magic (u32 0xced7230a) | lrecord (u32) | payload |
zero padding to 4 bytes``, where ``lrecord = cflag << 29 | length``. dmlc splits a payload wherever the
magic number appears at a 4-aligned position: the parts get cflag 1 (first), 2 (middle), 3 (last) and the
magic itself is dropped (the reader puts it back); a whole record has cflag 0. The .idx file holds
``key\\toffset`` lines. Image payloads start with an ``IRHeader`` (struct ``<IfQQ``: flag, label, id, id2);
when ``flag > 0`` the header's label is 0 and ``flag`` float32 labels follow it.

Two layouts exist in the field: insightface's (record 0 is a header: two float labels, no image, label[0]
is the first key after the image records: images are keys ``1 .. label[0]-1``, identity records
``[first, end)`` of each class follow, also without image) and im2rec's (no header: every record is an
image; with ``--pack-label`` each record carries its .lst labels as an array, flag = their number).
``detect_layout`` tells them apart from the records themselves.

Header and identity labels are float32, as mxnet reads them: above 2**24 keys they are rounded (the
reader then finds the exact boundary from the records; see ``float32_tolerance``), and class labels of
2**24 or more cannot be stored exactly at all (the writer refuses them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from cdface.errors import FormatError
from cdface.files import atomic_write, atomic_writer

logger = logging.getLogger("cdface.data")

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24
_LEN_MASK = (1 << 29) - 1
_FIRST_READ = 16384  # bytes read optimistically per record: a 112x112 face JPEG is ~4-8 KB

__all__ = [
    "IRHeader",
    "MAGIC",
    "RecordIOReader",
    "RecordIOWriter",
    "RecordLayout",
    "detect_layout",
    "float32_tolerance",
    "pack_header",
    "unpack_header",
    "read_idx",
]


class IRHeader(NamedTuple):
    """mxnet's image-record header. ``label`` is a float, or a float32 array when ``flag > 0``."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def pack_header(header: IRHeader | tuple, payload: bytes = b"") -> bytes:
    """Serialise like ``mx.recordio.pack``: an array label sets ``flag`` to its size and is stored after."""
    flag, label, id_, id2 = header
    if np.ndim(label) == 0:
        return struct.pack(_IR_FORMAT, 0, float(label), int(id_), int(id2)) + payload
    values = np.asarray(label, dtype="<f4").ravel()
    return struct.pack(_IR_FORMAT, values.size, 0.0, int(id_), int(id2)) + values.tobytes() + payload


def unpack_header(record: bytes, source: object = "<memory>", where: str | None = None) -> tuple[IRHeader, bytes]:
    """Split a record payload into its ``IRHeader`` and the remaining bytes (``mx.recordio.unpack``)."""
    if len(record) < IR_SIZE:
        raise FormatError(source, where, f"at least {IR_SIZE} bytes (an IRHeader), got {len(record)}")
    flag, label, id_, id2 = struct.unpack_from(_IR_FORMAT, record)
    if flag > 0:
        end = IR_SIZE + 4 * flag
        if end > len(record):
            raise FormatError(source, where, f"{flag} float32 labels after the IRHeader, record too short")
        labels = np.frombuffer(record, dtype="<f4", count=flag, offset=IR_SIZE).copy()
        return IRHeader(flag, labels, id_, id2), record[end:]
    return IRHeader(flag, label, id_, id2), record[IR_SIZE:]


def _padded(length: int) -> int:
    return (length + 3) & ~3


def read_idx(idx_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Parse an .idx file into (keys, offsets) int64 arrays, in file order (vectorised: millions of lines)."""
    raw = Path(idx_path).read_bytes()
    if not raw.strip():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    try:
        tokens = np.array(raw.split(), dtype=np.bytes_)
        numbers = tokens.astype(np.int64) if tokens.size % 2 == 0 else None
    except ValueError:
        numbers = None
    lines = raw.splitlines()
    if numbers is None or numbers.size != 2 * sum(1 for ln in lines if ln.strip()):
        _raise_idx_error(idx_path, lines)
    pairs = numbers.reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def _raise_idx_error(idx_path: str | os.PathLike, lines: list[bytes]) -> None:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not all(f.lstrip(b"-").isdigit() for f in fields):
            raise FormatError(idx_path, f"line {number}", f"'<int key>\\t<int offset>', got {line[:80]!r}")
    raise FormatError(idx_path, None, "'<int key>\\t<int offset>' lines")


@dataclass(frozen=True)
class RecordLayout:
    """Which keys hold images.

    insightface layout: ``header_key`` 0, images are the keys ``image_range = (1, end)``, identity records
    the keys ``identity_range = (end, ids_end)``. im2rec layout (no header): ``header_key`` None and every
    key is an image (``keys``, sorted). ``image_keys`` gives the image keys as an int64 array either way.
    """

    header_key: int | None
    identity_range: tuple[int, int] | None
    image_range: tuple[int, int] | None = None
    keys: np.ndarray | None = None

    @property
    def num_images(self) -> int:
        if self.image_range is not None:
            return self.image_range[1] - self.image_range[0]
        return 0 if self.keys is None else int(self.keys.size)

    @property
    def image_keys(self) -> np.ndarray:
        if self.image_range is not None:
            return np.arange(*self.image_range, dtype=np.int64)
        return np.zeros(0, np.int64) if self.keys is None else self.keys


class RecordIOReader:
    """Random access to a .rec file by key through its .idx.

    The file descriptor is opened lazily and reopened whenever the process id changes, so one reader can
    be shared with DataLoader workers and DDP processes (fork or spawn). Reads use ``os.pread``: no shared
    file position, safe from threads.
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> None:
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            what = "is a folder" if self.rec_path.is_dir() else "no such file"
            raise FormatError(self.rec_path, None, f"{what}; expected a RecordIO .rec file (with its .idx beside it)")
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        self.file_size = self.rec_path.stat().st_size
        if self.idx_path.is_file():
            keys, offsets = read_idx(self.idx_path)
        else:
            keys, offsets = scan_offsets(self.rec_path)
        bad = np.flatnonzero((offsets < 0) | (offsets + 8 > self.file_size))
        if bad.size:
            i = int(bad[0])
            raise FormatError(
                self.idx_path,
                f"line {i + 1} (key {keys[i]})",
                f"an offset inside {self.rec_path} ({self.file_size} bytes), got {offsets[i]}",
            )
        self.keys = keys
        self.offsets = offsets
        # sorted arrays, not a dict: millions of keys stay compact and cheap to send to worker processes
        order = np.argsort(keys, kind="stable")
        self._sorted_keys = keys[order]
        self._sorted_offsets = offsets[order]
        self._fd: int | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    # ---- process-safe file handle -------------------------------------------------------------------
    def _descriptor(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            with self._lock:
                if self._fd is None or self._pid != pid:
                    self._fd = os.open(self.rec_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                    self._pid = pid
        return self._fd

    def _pread(self, size: int, offset: int) -> bytes:
        fd = self._descriptor()
        if hasattr(os, "pread"):
            return os.pread(fd, size, offset)
        with self._lock:  # pragma: no cover - platforms without pread
            os.lseek(fd, offset, os.SEEK_SET)
            return os.read(fd, size)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fd"] = None
        state["_pid"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: S110 - interpreter shutdown
            pass

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (int, np.integer)) and self.offset_of(int(key)) is not None

    def offset_of(self, key: int) -> int | None:
        """Byte offset of ``key`` in the .rec, or None."""
        i = int(np.searchsorted(self._sorted_keys, key))
        if i < self._sorted_keys.size and self._sorted_keys[i] == key:
            return int(self._sorted_offsets[i])
        return None

    # ---- reading ------------------------------------------------------------------------------------
    def read_raw(self, key: int) -> bytes:
        """The record payload for ``key`` (multi-part records joined, magic restored between parts)."""
        offset = self.offset_of(int(key))
        if offset is None:
            raise KeyError(f"key {key} not in {self.idx_path}")
        return self.read_at(offset, where=f"record {key}")

    def read_at(self, offset: int, where: str | None = None) -> bytes:
        """The record starting at byte ``offset`` (validated: magic, part flags, truncation)."""
        where = where or f"record at offset {offset}"
        window = [offset, self._pread(_FIRST_READ, offset)]  # [file offset of buffer, buffer]

        def take(start: int, size: int) -> bytes:
            base, buf = window
            if base <= start and start + size <= base + len(buf):
                return buf[start - base : start - base + size]
            data = self._pread(max(size, _FIRST_READ), start)
            window[0], window[1] = start, data
            if len(data) < size:
                raise FormatError(
                    self.rec_path,
                    where,
                    f"{size} bytes at byte {start}, the file is truncated ({self.file_size} bytes)",
                )
            return data[:size]

        parts: list[bytes] = []
        cur = offset
        while True:
            magic, lrec = struct.unpack("<II", take(cur, 8))
            if magic != MAGIC:
                raise FormatError(self.rec_path, where, f"magic 0x{MAGIC:08x} at byte {cur}, got 0x{magic:08x}")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if cflag > 3 or (cflag in (2, 3)) != bool(parts):
                raise FormatError(self.rec_path, where, f"a valid multi-part flag at byte {cur}, got {cflag}")
            if cur + 8 + length > self.file_size:
                raise FormatError(
                    self.rec_path,
                    where,
                    f"{length} payload bytes at byte {cur + 8}, the file is truncated ({self.file_size} bytes)",
                )
            parts.append(take(cur + 8, length))
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)
            cur += 8 + _padded(length)

    def read(self, key: int) -> tuple[IRHeader, bytes]:
        """``(IRHeader, payload after the header)`` for ``key``."""
        return unpack_header(self.read_raw(key), self.rec_path, f"record {key}")

    def read_headers(self, keys: Sequence[int] | np.ndarray, chunk: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
        """``(flag, first_label)`` of many records, reading only their header bytes (see ``read_header_table``)."""
        flags, labels, _ = self.read_header_table(keys, chunk)
        return flags, labels

    def read_header_table(
        self, keys: Sequence[int] | np.ndarray, chunk: int = 1 << 18
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(flag uint32, first_label float32, payload_size int64)`` of many records, from header bytes only.

        For flag > 0 the first label is the first float after the header (insightface's image label) and
        the payload starts after the ``flag`` floats; ``payload_size`` is the size of what follows the
        labels (0 for a header/identity record). Vectorised and chunked; records the writer split into
        several parts, or too short to hold a header, take the exact path.
        """
        keys = np.asarray(keys, dtype=np.int64)
        flags = np.zeros(keys.size, np.uint32)
        labels = np.zeros(keys.size, np.float32)
        sizes = np.zeros(keys.size, np.int64)
        if keys.size == 0:
            return flags, labels, sizes
        if self._sorted_keys.size == 0:
            raise KeyError(f"key {int(keys[0])} not in {self.idx_path}")
        pos = np.minimum(np.searchsorted(self._sorted_keys, keys), self._sorted_keys.size - 1)
        found = self._sorted_keys[pos] == keys
        if not found.all():
            raise KeyError(f"key {int(keys[~found][0])} not in {self.idx_path}")
        offsets = self._sorted_offsets[pos]
        mm = np.memmap(self.rec_path, dtype=np.uint8, mode="r")
        try:
            for start in range(0, keys.size, chunk):
                part = slice(start, start + chunk)
                flags[part], labels[part], sizes[part] = self._header_chunk(mm, keys[part], offsets[part])
        finally:
            del mm
        return flags, labels, sizes

    def _header_chunk(
        self, mm: np.ndarray, keys: np.ndarray, offsets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        width = 8 + IR_SIZE + 4
        gather = np.minimum(offsets[:, None] + np.arange(width), self.file_size - 1)
        raw = np.ascontiguousarray(mm[gather])
        words = raw[:, :16].view("<u4")
        magic, lrec, flags = words[:, 0], words[:, 1], words[:, 2].copy()
        bad_magic = np.flatnonzero(magic != MAGIC)
        if bad_magic.size:
            k, at = int(keys[bad_magic[0]]), int(offsets[bad_magic[0]])
            raise FormatError(self.rec_path, f"record {k}", f"magic 0x{MAGIC:08x} at byte {at}")
        cflag = lrec >> 29
        length = (lrec & _LEN_MASK).astype(np.int64)
        header_label = raw[:, 12:16].copy().view("<f4")[:, 0]
        first_extra = raw[:, 32:36].copy().view("<f4")[:, 0]
        labels = np.where(flags > 0, first_extra, header_label).astype(np.float32)
        sizes = length - IR_SIZE - 4 * flags.astype(np.int64)
        need = np.where(flags > 0, IR_SIZE + 4, IR_SIZE)
        suspicious = (cflag != 0) | (length < need) | (sizes < 0) | (offsets + 8 + length > self.file_size)
        for i in np.flatnonzero(suspicious):  # the exact path joins parts or raises a precise error
            header, payload = self.read(int(keys[i]))
            flags[i] = header.flag
            labels[i] = header.label[0] if header.flag > 0 else header.label
            sizes[i] = len(payload)
        return flags, labels, sizes

    def count_keys(self, lo: int, hi: int) -> int:
        """How many keys ``k`` of the index have ``lo <= k < hi``."""
        return int(np.searchsorted(self._sorted_keys, hi) - np.searchsorted(self._sorted_keys, lo))

    @property
    def max_key(self) -> int:
        return int(self._sorted_keys[-1]) if self._sorted_keys.size else -1

    def sorted_keys(self) -> np.ndarray:
        return self._sorted_keys

    def layout(self) -> RecordLayout:
        """insightface's layout (a real header record 0) or im2rec's (every record an image); see ``detect_layout``."""
        return detect_layout(self)


class KeyIndex(Protocol):
    """What ``detect_layout`` needs of a reader (``RecordIOReader``, or a stand-in over a huge key space)."""

    rec_path: Path
    idx_path: Path

    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...
    def read(self, key: int) -> tuple[IRHeader, bytes]: ...
    def count_keys(self, lo: int, hi: int) -> int: ...
    def sorted_keys(self) -> np.ndarray: ...

    @property
    def max_key(self) -> int: ...


def float32_tolerance(value: float) -> int:
    """How far the integer behind a float32 header label can be from it: 0 below 2**24, else one spacing.

    RecordIO header labels are float32 (mxnet's IRHeader ``<IfQQ``): above 2**24 consecutive integers
    share a float (WebFace42M's 42,474,557 images give a header end of 42,474,560 for key 42,474,558).
    """
    value = abs(float(value))
    if value < 2**24:
        return 0
    return int(np.spacing(np.float32(value)))


def _is_identity_record(header: IRHeader, payload: bytes) -> bool:
    """A header/identity record: float labels after the IRHeader and no image payload (insightface writes b"")."""
    return header.flag >= 2 and len(payload) == 0


def detect_layout(index: KeyIndex) -> RecordLayout:
    """Which records are images, decided from the records themselves.

    Record 0 is insightface's header only when it really is one: a record with at least two labels and
    no image payload, whose labels are integers ``[images end, identities end]``. Its image end is then
    checked against the records: key ``end - 1`` must be an image and key ``end`` an identity record (or
    the end of the file). Where float32 cannot hold the header's value exactly (2**24 keys and more),
    the true boundary is found by a binary search over the keys the float may stand for. Every key of the
    index must be accounted for (header, images ``1..end-1``, identities ``end..ids_end-1``), so a misread
    is an error, never a silent training on part of the data. Anything else is im2rec's layout: every
    record is an image (``im2rec`` with or without ``--pack-label``, shuffled keys, any class at key 0).
    """
    if len(index) == 0:
        return RecordLayout(None, None, keys=np.zeros(0, np.int64))
    if 0 in index:
        header, payload = index.read(0)
        if _is_identity_record(header, payload):
            return _insightface_layout(index, np.asarray(header.label, dtype=np.float64))
    return RecordLayout(None, None, keys=np.asarray(index.sorted_keys(), dtype=np.int64))


def _insightface_layout(index: KeyIndex, labels: np.ndarray) -> RecordLayout:
    def fail(expected: str, where: str | None = "record 0") -> FormatError:
        return FormatError(index.rec_path, where, expected)

    if not (np.isfinite(labels).all() and (labels == np.round(labels)).all() and labels[0] >= 1):
        raise fail(f"header labels [images end >= 1, identities end] (integers), got {labels.tolist()}")
    end_hdr, ids_hdr = int(labels[0]), int(labels[1])
    if ids_hdr < end_hdr:
        raise fail(f"header labels with identities end >= images end, got {labels.tolist()}")
    last = index.max_key

    def is_identity(key: int) -> bool:
        if key > last:
            return True  # past the last record: the image range may end with the file
        if key not in index:
            raise fail(f"key {key} in the index (the header's image/identity range needs it)", None)
        return _is_identity_record(*index.read(key))

    tol = float32_tolerance(end_hdr)
    lo, hi = max(1, end_hdr - tol), end_hdr + tol + 1  # the boundary is the first identity key in [lo, hi)
    while lo < hi:  # binary search: images, then identity records
        mid = (lo + hi) // 2
        if is_identity(mid):
            hi = mid
        else:
            lo = mid + 1
    end = lo
    exact = "" if tol == 0 else f" (float32 label, +-{tol})"
    if end < 2 or end > end_hdr + tol or not is_identity(end) or is_identity(end - 1):
        raise fail(
            f"image records at keys 1..{end_hdr - 1}{exact} followed by identity records, as header record 0 "
            f"says; the records disagree (first identity record found at key {end})"
        )
    images = index.count_keys(1, end)
    if images != end - 1:
        raise fail(f"every image key 1..{end - 1} in the index, found {images} of them", None)
    ids_end = max(last + 1, end)
    ids_tol = float32_tolerance(ids_hdr)
    if ids_end > ids_hdr + ids_tol or len(index) != index.count_keys(0, ids_end):
        # keys the header does not account for could be images: refuse rather than skip them
        raise fail(
            f"keys 0..{ids_hdr - 1} (header, images to {end - 1}, identity records to the header's identities "
            f"end {ids_hdr}{'' if ids_tol == 0 else f' +-{ids_tol}'}), the index has {len(index)} keys "
            f"up to {last}",
            None,
        )
    identities = index.count_keys(end, ids_end)
    if ids_end < ids_hdr - ids_tol or identities != ids_end - end:
        # training reads only the images (all present); the identity records are not used
        logger.warning(
            "%s: header record 0 announces identity records %d..%d, the index has %d of them; "
            "the %d images are complete",
            index.rec_path, end, ids_hdr - 1, identities, end - 1,
        )
    return RecordLayout(0, (end, ids_end), image_range=(1, end))


def scan_offsets(rec_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Build (keys 0..n-1, offsets) by walking a .rec file that has no .idx."""
    empty = os.path.getsize(rec_path) == 0
    data = np.zeros(0, np.uint8) if empty else np.memmap(rec_path, dtype=np.uint8, mode="r")
    size = data.size
    offsets: list[int] = []
    pos = 0
    starting = True
    while pos < size:
        if pos + 8 > size:
            raise FormatError(rec_path, f"record {len(offsets)}", "an 8-byte record header, file truncated")
        magic, lrec = struct.unpack("<II", bytes(data[pos : pos + 8]))
        if magic != MAGIC:
            raise FormatError(rec_path, f"record {len(offsets)}", f"magic 0x{MAGIC:08x} at byte {pos}")
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        if starting:
            offsets.append(pos)
        starting = cflag in (0, 3)
        pos += 8 + _padded(length)
        if pos > size:
            raise FormatError(rec_path, f"record {len(offsets) - 1}", "payload bytes, file truncated")
    return np.arange(len(offsets), dtype=np.int64), np.asarray(offsets, dtype=np.int64)


class RecordIOWriter:
    """Write .rec/.idx byte-for-byte like ``mx.recordio.MXIndexedRecordIO`` (dmlc splitting included).

    Both files are written as temporaries beside their targets (``cdface.files.atomic_writer``) and renamed
    over them by ``close()``: a reader never sees half a .rec, and a ``with`` block left by an exception (a
    corrupt image while packing, Ctrl-C) removes the temporaries and leaves any earlier .rec/.idx unchanged.
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        self._files = contextlib.ExitStack()
        with self._files:  # opening the .idx may fail: then the .rec's temporary goes too
            self._rec = self._files.enter_context(atomic_writer(self.rec_path))
            self._idx = self._files.enter_context(atomic_writer(self.idx_path))
            self._files = self._files.pop_all()
        self._pos = 0

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._files.__exit__(exc_type, exc, tb)  # the temporaries are removed, the exception goes on

    def close(self) -> None:
        """Finish both files: flushed, fsynced and renamed over ``rec_path`` / ``idx_path``."""
        self._files.close()

    def write(self, key: int, payload: bytes) -> int:
        """Append one record under ``key``; returns its offset."""
        offset = self._pos
        self._rec.write(encode_record(payload))
        self._pos = self._rec.tell()
        self._idx.write(f"{int(key)}\t{offset}\n".encode("ascii"))
        return offset

    def write_image(self, key: int, header: IRHeader | tuple, image_bytes: bytes) -> int:
        return self.write(key, pack_header(header, image_bytes))


def encode_record(payload: bytes) -> bytes:
    """dmlc ``RecordIOWriter::WriteRecord``: split at 4-aligned magic occurrences, pad to 4 bytes."""
    if len(payload) >= 1 << 29:
        raise ValueError("a RecordIO record must be shorter than 2**29 bytes")
    cuts = _aligned_magic_positions(payload)
    out = bytearray()
    start = 0
    for i, cut in enumerate(cuts):
        out += struct.pack("<II", MAGIC, ((1 if i == 0 else 2) << 29) | (cut - start))
        out += payload[start:cut]
        start = cut + 4
    out += struct.pack("<II", MAGIC, ((3 if cuts else 0) << 29) | (len(payload) - start))
    out += payload[start:]
    out += b"\0" * (_padded(len(payload)) - len(payload))
    return bytes(out)


def _aligned_magic_positions(payload: bytes) -> list[int]:
    aligned = len(payload) & ~3
    if aligned == 0:
        return []
    words = np.frombuffer(payload, dtype="<u4", count=aligned // 4)
    return (np.flatnonzero(words == MAGIC) * 4).tolist()


def write_insightface_rec(
    out_dir: str | os.PathLike,
    labels: Sequence[int] | np.ndarray,
    images: Sequence[bytes] | Callable[[int], bytes],
    image_size: tuple[int, int] = (112, 112),
    prefix: str = "train",
) -> dict[str, Path]:
    """Write ``<prefix>.rec/.idx`` and ``property`` in insightface's layout.

    ``images`` holds the encoded images in the order of ``labels`` (or is ``i -> bytes``, so a large set
    is read one image at a time). Images are written grouped by class (stable order). Record 0: flag 2,
    label [first identity key, end]; images 1..N (flag 0, float label); identity records (flag 2,
    label [first, last + 1)).

    Every label is float32, the only label type mxnet reads. Class ids must be below 2**24 (exact in
    float32; ``ValueError`` otherwise). Key boundaries of 2**24 and more are stored rounded to the
    nearest float32, as insightface's own files are; ``detect_layout`` recovers the exact image/identity
    boundary from the records, while mxnet-based readers (arcface_torch's ``MXFaceDataset``) take the
    rounded value as it is.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= 2**24):
        raise ValueError(
            "class ids must be in 0..2**24-1 to be exact as float32 RecordIO labels, "
            f"got {labels.min()}..{labels.max()}"
        )
    order = np.argsort(labels, kind="stable")
    get = images if callable(images) else images.__getitem__
    classes, first_pos, counts = np.unique(labels[order], return_index=True, return_counts=True)
    n = labels.size
    end_images = n + 1
    end_ids = end_images + classes.size
    rec_path, idx_path = out / f"{prefix}.rec", out / f"{prefix}.idx"
    with RecordIOWriter(rec_path, idx_path) as writer:
        writer.write(0, pack_header(IRHeader(0, np.array([end_images, end_ids], np.float32), 0, 0)))
        for key, i in enumerate(order.tolist(), start=1):
            writer.write(key, pack_header(IRHeader(0, float(labels[i]), key, 0), get(i)))
        for j, (start, count) in enumerate(zip(first_pos.tolist(), counts.tolist())):
            bounds = np.array([start + 1, start + 1 + count], np.float32)
            writer.write(end_images + j, pack_header(IRHeader(0, bounds, 0, 0)))
    prop = out / "property"
    atomic_write(prop, f"{classes.size},{image_size[0]},{image_size[1]}\n")
    return {"rec": rec_path, "idx": idx_path, "property": prop}
