"""Random access by key to a mxnet/dmlc RecordIO file (.rec + .idx), without mxnet.

The framing (records, ``IRHeader``, .idx) is described in ``recordio_format``; which keys are images in
``recordio_layout``; ``recordio_writer`` writes such files.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cdface.data.recordio_format import (
    IR_SIZE,
    LEN_MASK,
    MAGIC,
    MAGIC_BYTES,
    IRHeader,
    padded_length,
    read_idx,
    scan_offsets,
    unpack_header,
)
from cdface.data.recordio_layout import RecordLayout, detect_layout
from cdface.errors import FormatError

_FIRST_READ = 16384  # bytes read optimistically per record: a 112x112 face JPEG is ~4-8 KB

__all__ = ["RecordIOReader"]


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
            cflag, length = lrec >> 29, lrec & LEN_MASK
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
                return MAGIC_BYTES.join(parts)
            cur += 8 + padded_length(length)

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
        length = (lrec & LEN_MASK).astype(np.int64)
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
