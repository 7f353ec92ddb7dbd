"""mxnet/dmlc RecordIO framing: records in a .rec, the IRHeader of an image record, the .idx, without mxnet.

Layout of a .rec file: a sequence of records, each ``magic (u32 0xced7230a) | lrecord (u32) | payload |
zero padding to 4 bytes``, where ``lrecord = cflag << 29 | length``. dmlc splits a payload wherever the
magic number appears at a 4-aligned position: the parts get cflag 1 (first), 2 (middle), 3 (last) and the
magic itself is dropped (the reader puts it back); a whole record has cflag 0. The .idx file holds
``key\\toffset`` lines. Image payloads start with an ``IRHeader`` (struct ``<IfQQ``: flag, label, id, id2);
when ``flag > 0`` the header's label is 0 and ``flag`` float32 labels follow it.

Which records are images is ``recordio_layout``'s question; reading by key is ``recordio.RecordIOReader``,
writing files is ``recordio_writer``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cdface.errors import FormatError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24
LEN_MASK = (1 << 29) - 1  # lrecord's low 29 bits: the length; the top 3: cflag

__all__ = [
    "IRHeader",
    "IR_SIZE",
    "LEN_MASK",
    "MAGIC",
    "MAGIC_BYTES",
    "encode_record",
    "pack_header",
    "padded_length",
    "read_idx",
    "scan_offsets",
    "unpack_header",
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


def padded_length(length: int) -> int:
    """A payload's length rounded up to the 4-byte boundary dmlc pads records to."""
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
        cflag, length = lrec >> 29, lrec & LEN_MASK
        if starting:
            offsets.append(pos)
        starting = cflag in (0, 3)
        pos += 8 + padded_length(length)
        if pos > size:
            raise FormatError(rec_path, f"record {len(offsets) - 1}", "payload bytes, file truncated")
    return np.arange(len(offsets), dtype=np.int64), np.asarray(offsets, dtype=np.int64)


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
    out += b"\0" * (padded_length(len(payload)) - len(payload))
    return bytes(out)


def _aligned_magic_positions(payload: bytes) -> list[int]:
    aligned = len(payload) & ~3
    if aligned == 0:
        return []
    words = np.frombuffer(payload, dtype="<u4", count=aligned // 4)
    return (np.flatnonzero(words == MAGIC) * 4).tolist()
