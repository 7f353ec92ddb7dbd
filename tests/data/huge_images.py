"""Images that are small on disk and huge once decoded, written from the format definitions.

``flat_gray_jpeg``: a baseline JPEG (ITU-T T.81) of one 8-bit grey component, every 8x8 block holding
only a zero DC difference and an end-of-block, with two one-code Huffman tables (DC: category 0 = "00",
AC: EOB = "00"). Each block is 4 bits, so the scan is ``ceil(blocks / 2)`` zero bytes: 12000x12000 is
1.1 MB on disk and decodes to 144 M pixels (432 MB as RGB), grey level 128 (DC 0 after the level shift).

``flat_gray_png``: an 8-bit greyscale PNG of level 128, compressed row by row (never held whole).
"""

from __future__ import annotations

import struct
import zlib


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(body) + 2) + body


def flat_gray_jpeg(width: int, height: int) -> bytes:
    blocks = -(-width // 8) * -(-height // 8)
    counts = bytes([0, 1] + [0] * 14)  # one code of length 2: "00"
    scan = bytearray(blocks // 2)
    if blocks % 2:
        scan.append(0x0F)  # last block's 4 bits, padded with 1-bits as T.81 F.1.2.3 says
    return b"".join([
        b"\xff\xd8",
        _segment(0xDB, b"\x00" + bytes([1] * 64)),  # DQT: table 0, all ones
        _segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"),  # SOF0, 1 component
        _segment(0xC4, b"\x00" + counts + b"\x00"),  # DHT DC table 0: symbol 0 (category 0)
        _segment(0xC4, b"\x10" + counts + b"\x00"),  # DHT AC table 0: symbol 0x00 (EOB)
        _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),  # SOS: component 1, tables 0/0, Ss 0, Se 63
        bytes(scan),
        b"\xff\xd9",
    ])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def flat_gray_png(width: int, height: int) -> bytes:
    row = b"\x00" + b"\x80" * width  # filter type 0, grey 128
    packer = zlib.compressobj(1)
    rows_per_call = max(1, (1 << 20) // len(row))  # ~1 MB of raw rows per call
    idat = b"".join(
        packer.compress(row * min(rows_per_call, height - start)) for start in range(0, height, rows_per_call)
    ) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
