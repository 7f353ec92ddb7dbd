"""mxnet/dmlc RecordIO (.rec + .idx) read and write, without mxnet.

Layout of a .rec file: a sequence of records, each ``magic (u32 0xced7230a) | lrecord (u32) | payload |
zero padding to 4 bytes``, where ``lrecord = cflag << 29 | length``. dmlc splits a payload wherever the
magic number appears at a 4-aligned position: the parts get cflag 1 (first), 2 (middle), 3 (last) and the
magic itself is dropped (the reader puts it back); a whole record has cflag 0. The .idx file holds
``key\\toffset`` lines. Image payloads start with an ``IRHeader`` (struct ``<IfQQ``: flag, label, id, id2);
when ``flag > 0`` the header's label is 0 and ``flag`` float32 labels follow it.

Two layouts exist in the field: insightface's (record 0 is a header with flag > 0 whose label[0] is the
first key after the image records: images are keys ``1 .. label[0]-1``, identity records follow) and
im2rec's (no header: every record is an image).
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cdface.errors import FormatError

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
    """Which keys hold images. ``header_key`` is None for im2rec files (no header record)."""

    image_keys: np.ndarray
    header_key: int | None
    identity_range: tuple[int, int] | None


class RecordIOReader:
    """Random access to a .rec file by key through its .idx.

    The file descriptor is opened lazily and reopened whenever the process id changes, so one reader can
    be shared with DataLoader workers and DDP processes (fork or spawn). Reads use ``os.pread``: no shared
    file position, safe from threads.
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> None:
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise FormatError(self.rec_path, None, "an existing RecordIO .rec file")
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
        """``(flag, first_label)`` of many records, reading only their header bytes (vectorised, chunked).

        For flag > 0 the first label is the first float after the header (insightface's image label).
        Records the writer split into several parts, or too short to hold a header, take the exact path.
        """
        keys = np.asarray(keys, dtype=np.int64)
        flags = np.zeros(keys.size, np.uint32)
        labels = np.zeros(keys.size, np.float32)
        if keys.size == 0:
            return flags, labels
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
                flags[part], labels[part] = self._header_chunk(mm, keys[part], offsets[part])
        finally:
            del mm
        return flags, labels

    def _header_chunk(self, mm: np.ndarray, keys: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        need = np.where(flags > 0, IR_SIZE + 4, IR_SIZE)
        suspicious = (cflag != 0) | (length < need) | (offsets + 8 + length > self.file_size)
        for i in np.flatnonzero(suspicious):  # the exact path joins parts or raises a precise error
            header, _ = self.read(int(keys[i]))
            flags[i] = header.flag
            labels[i] = header.label[0] if header.flag > 0 else header.label
        return flags, labels

    def layout(self) -> RecordLayout:
        """Detect insightface's layout (header record 0 with flag > 0) or im2rec's (no header)."""
        if len(self.keys) == 0:
            return RecordLayout(np.zeros(0, np.int64), None, None)
        first_key = 0 if 0 in self else int(self.keys[0])
        header, _ = self.read(first_key)
        if first_key == 0 and header.flag > 0:
            labels = np.asarray(header.label, dtype=np.float64)
            if not (np.isfinite(labels).all() and (labels >= 0).all() and (labels < 2**40).all()):
                raise FormatError(self.rec_path, "record 0", f"header labels [images end, ids end], got {labels}")
            end_images = int(labels[0])
            end_ids = int(labels[1]) if labels.size > 1 else end_images
            if end_images < 1:
                raise FormatError(self.rec_path, "record 0", f"header label[0] >= 1, got {labels.tolist()}")
            image_keys = self.keys[(self.keys >= 1) & (self.keys < end_images)]
            image_keys = np.sort(image_keys)
            expected = end_images - 1
            if image_keys.size != expected:
                raise FormatError(
                    self.idx_path,
                    None,
                    f"image keys 1..{end_images - 1} (from header record 0), found {image_keys.size} of them",
                )
            return RecordLayout(image_keys, 0, (end_images, end_ids))
        return RecordLayout(np.sort(self.keys), None, None)


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
    """Write .rec/.idx byte-for-byte like ``mx.recordio.MXIndexedRecordIO`` (dmlc splitting included)."""

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        self._rec = open(self.rec_path, "wb")  # noqa: SIM115 - closed in close()
        self._idx = open(self.idx_path, "w", encoding="ascii", newline="\n")  # noqa: SIM115
        self._pos = 0

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._rec.closed:
            self._rec.close()
            self._idx.close()

    def write(self, key: int, payload: bytes) -> int:
        """Append one record under ``key``; returns its offset."""
        offset = self._pos
        self._rec.write(encode_record(payload))
        self._pos = self._rec.tell()
        self._idx.write(f"{int(key)}\t{offset}\n")
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
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, dtype=np.int64)
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
    prop.write_text(f"{classes.size},{image_size[0]},{image_size[1]}\n")
    return {"rec": rec_path, "idx": idx_path, "property": prop}
