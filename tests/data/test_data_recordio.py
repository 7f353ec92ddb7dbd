"""RecordIO: byte-exact round trips with mxnet-written files, both layouts, multi-part records, errors."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdface.data.recordio import RecordIOReader
from cdface.data.recordio_format import MAGIC, IRHeader, encode_record, pack_header, read_idx, unpack_header
from cdface.data.recordio_writer import RecordIOWriter, write_insightface_rec
from cdface.errors import CdfaceError, FormatError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
REAL = SHARED / "realfaces"
IM2REC = SHARED / "recordio_im2rec_sample"
needs_shared = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data (real mxnet files) not present")


def test_header_pack_unpack_scalar_and_array():
    rec = pack_header(IRHeader(0, 7.0, 3, 4), b"img")
    assert len(rec) == 24 + 3
    header, rest = unpack_header(rec)
    assert header == IRHeader(0, 7.0, 3, 4) and rest == b"img"
    rec = pack_header(IRHeader(0, np.array([1.0, 41.0]), 5, 0), b"xy")
    header, rest = unpack_header(rec)
    assert header.flag == 2 and header.label.tolist() == [1.0, 41.0] and header.id == 5 and rest == b"xy"
    # mxnet stores label 0 in the header when an array follows
    assert struct.unpack_from("<IfQQ", rec) == (2, 0.0, 5, 0)


def test_encode_record_splits_at_aligned_magic_like_dmlc():
    magic = struct.pack("<I", MAGIC)
    payload = b"abcd" + magic + b"efgh" + magic + b"ij"  # magic at aligned offsets 4 and 12
    data = encode_record(payload)
    # reference: parts (cflag 1 "abcd"), (2, "efgh"), (3, "ij") with zero padding on the last part
    expected = (
        struct.pack("<II", MAGIC, (1 << 29) | 4)
        + b"abcd"
        + struct.pack("<II", MAGIC, (2 << 29) | 4)
        + b"efgh"
        + struct.pack("<II", MAGIC, (3 << 29) | 2)
        + b"ij"
        + b"\0\0"
    )
    assert data == expected
    unaligned = b"ab" + magic + b"cd"  # not 4-aligned: stays in one record
    assert encode_record(unaligned)[4:8] == struct.pack("<I", len(unaligned))


def test_write_read_round_trip_with_multipart(tmp_path):
    magic = struct.pack("<I", MAGIC)
    payloads = [b"", b"x", magic, b"1234" + magic + magic + b"56", bytes(range(256)) * 3, magic + b"tail"]
    with RecordIOWriter(tmp_path / "a.rec") as writer:
        for key, payload in enumerate(payloads):
            writer.write(key * 10, payload)
    reader = RecordIOReader(tmp_path / "a.rec")
    assert reader.keys.tolist() == [0, 10, 20, 30, 40, 50]
    for key, payload in enumerate(payloads):
        assert reader.read_raw(key * 10) == payload
    with pytest.raises(KeyError):
        reader.read_raw(7)


def test_read_headers_matches_full_reads(tmp_path):
    magic = struct.pack("<I", MAGIC)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 50, 40).astype(float)
    with RecordIOWriter(tmp_path / "h.rec") as writer:
        for key, label in enumerate(labels):
            body = rng.bytes(int(rng.integers(0, 64))) + (magic if key % 7 == 0 else b"")
            header = IRHeader(0, [label, 9.0], key, 0) if key % 3 == 0 else IRHeader(0, label, key, 0)
            writer.write(key, pack_header(header, body))
    reader = RecordIOReader(tmp_path / "h.rec")
    flags, got = reader.read_headers(np.arange(40), chunk=7)
    for key in range(40):
        header, _ = reader.read(key)
        assert flags[key] == header.flag
        assert got[key] == (header.label[0] if header.flag else header.label) == labels[key]


@needs_shared
def test_real_insightface_file_reads_and_rewrites_byte_exact(tmp_path):
    reader = RecordIOReader(REAL / "train.rec", REAL / "train.idx")
    layout = reader.layout()
    assert layout.header_key == 0 and layout.identity_range == (641, 657)
    assert layout.image_keys.tolist() == list(range(1, 641))
    _, labels = reader.read_headers(layout.image_keys)
    assert np.bincount(labels.astype(int)).tolist() == [40] * 16
    header, payload = reader.read(1)
    assert header.flag == 0 and payload[:3] == b"\xff\xd8\xff"
    ident, _ = reader.read(641)
    assert ident.flag == 2 and ident.label.tolist() == [1.0, 41.0]
    with RecordIOWriter(tmp_path / "copy.rec") as writer:
        for key in reader.keys.tolist():
            writer.write(key, reader.read_raw(key))
    assert (tmp_path / "copy.rec").read_bytes() == (REAL / "train.rec").read_bytes()
    assert (tmp_path / "copy.idx").read_bytes() == (REAL / "train.idx").read_bytes()


@needs_shared
def test_real_im2rec_file_has_no_header(tmp_path):
    reader = RecordIOReader(IM2REC / "train.rec")
    layout = reader.layout()
    assert layout.header_key is None and layout.image_keys.tolist() == list(range(8))
    lst = {
        int(f[0]): float(f[1])
        for f in (ln.split("\t") for ln in (IM2REC / "train.lst").read_text().split("\n"))
        if len(f) == 3
    }
    _, labels = reader.read_headers(layout.image_keys)
    assert {k: float(v) for k, v in zip(range(8), labels)} == lst
    with RecordIOWriter(tmp_path / "c.rec") as writer:
        for key in reader.keys.tolist():  # idx order, as im2rec wrote it
            writer.write(key, reader.read_raw(key))
    assert (tmp_path / "c.rec").read_bytes() == (IM2REC / "train.rec").read_bytes()


def test_insightface_writer_layout(tmp_path):
    labels = np.array([2, 0, 2, 1, 0])
    images = [f"img{i}".encode() for i in range(5)]
    paths = write_insightface_rec(tmp_path, labels, images)
    reader = RecordIOReader(paths["rec"])
    header, _ = reader.read(0)
    assert header.flag == 2 and header.label.tolist() == [6.0, 9.0]
    got = [reader.read(k) for k in range(1, 6)]
    assert [h.label for h, _ in got] == [0.0, 0.0, 1.0, 2.0, 2.0]
    assert [p for _, p in got] == [b"img1", b"img4", b"img3", b"img0", b"img2"]  # stable grouping by class
    assert [reader.read(k)[0].label.tolist() for k in (6, 7, 8)] == [[1, 3], [3, 4], [4, 6]]
    assert paths["property"].read_text().strip() == "3,112,112"


def test_scan_without_idx(tmp_path):
    with RecordIOWriter(tmp_path / "s.rec") as writer:
        for key in range(5):
            writer.write(key, pack_header(IRHeader(0, float(key), key, 0), struct.pack("<I", MAGIC) * key))
    (tmp_path / "s.idx").unlink()
    reader = RecordIOReader(tmp_path / "s.rec")
    assert [reader.read(k)[0].label for k in range(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]


def _small_rec(tmp_path: Path) -> Path:
    with RecordIOWriter(tmp_path / "t.rec") as writer:
        for key in range(3):
            writer.write(key, pack_header(IRHeader(0, float(key), key, 0), b"payload-%d" % key * 5))
    return tmp_path / "t.rec"


def test_errors_name_file_and_record(tmp_path):
    rec = _small_rec(tmp_path)
    data = rec.read_bytes()
    rec.write_bytes(data[:-20])  # truncate the last record
    with pytest.raises(FormatError, match=r"t\.rec, record 2: .*truncated"):
        RecordIOReader(rec).read(2)
    broken = bytearray(data)
    offset = int(read_idx(tmp_path / "t.idx")[1][1])
    broken[offset] ^= 0xFF
    rec.write_bytes(bytes(broken))
    with pytest.raises(FormatError, match=r"record 1: magic"):
        RecordIOReader(rec).read(1)
    rec.write_bytes(data)
    (tmp_path / "t.idx").write_text("0\t0\n1\t999999\n")
    with pytest.raises(FormatError, match=r"t\.idx, line 2 \(key 1\): an offset inside"):
        RecordIOReader(rec)
    (tmp_path / "t.idx").write_text("0\t0\nbanana\n")
    with pytest.raises(FormatError, match=r"line 2"):
        RecordIOReader(rec)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_corrupted_rec_raises_only_project_errors(tmp_path, data):
    if data.draw(st.booleans()):
        rec = _small_rec(tmp_path)
    else:  # insightface layout: header record 0 and identity records
        rec = write_insightface_rec(tmp_path, [0, 1, 1], lambda i: b"jpeg-%d" % i, prefix="t")["rec"]
    raw = bytearray(rec.read_bytes())
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, max(len(raw) - 1, 0)), st.integers(1, 255)), max_size=6))
    for pos, xor in flips:
        if pos < len(raw):
            raw[pos] ^= xor
    fuzz = tmp_path / "fuzz.rec"
    fuzz.write_bytes(bytes(raw[:cut]))
    (tmp_path / "fuzz.idx").write_bytes((tmp_path / "t.idx").read_bytes())
    try:
        reader = RecordIOReader(fuzz)
        reader.layout()
        for key in reader.keys.tolist():
            reader.read(key)
        reader.read_headers(reader.keys)
    except CdfaceError:
        pass


def test_a_write_stopped_by_an_error_keeps_the_old_files_and_leaves_no_temporary(tmp_path):
    with RecordIOWriter(tmp_path / "t.rec") as writer:
        writer.write(0, b"old record")
    old = (tmp_path / "t.rec").read_bytes(), (tmp_path / "t.idx").read_bytes()
    with pytest.raises(RuntimeError, match="corrupt image"), RecordIOWriter(tmp_path / "t.rec") as writer:
        writer.write(0, b"new record")
        raise RuntimeError("corrupt image")
    assert ((tmp_path / "t.rec").read_bytes(), (tmp_path / "t.idx").read_bytes()) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.idx", "t.rec"]
    assert RecordIOReader(tmp_path / "t.rec").read_raw(0) == b"old record"


def test_data_pack_stopped_by_a_corrupt_image_leaves_no_partial_rec(tmp_path, capsys):
    from PIL import Image

    from cdface.cli import main

    for k in range(2):
        (tmp_path / "faces" / f"id{k}").mkdir(parents=True)
        Image.fromarray(np.full((112, 112, 3), 40 * k, np.uint8)).save(tmp_path / "faces" / f"id{k}" / "a.jpg")
    assert main(["data", "pack", str(tmp_path / "faces"), str(tmp_path / "out")]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    (tmp_path / "faces" / "id1" / "b.jpg").write_bytes(b"")  # an empty file: the pack is refused
    assert main(["data", "pack", str(tmp_path / "faces"), str(tmp_path / "out")]) == 2
    assert "b.jpg" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
