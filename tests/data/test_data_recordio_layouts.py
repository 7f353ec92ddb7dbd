"""Which RecordIO records are images: every layout mxnet's and insightface's tools write.

Records are built byte for byte from the format's definition (mxnet ``recordio.pack``: struct ``<IfQQ``
flag, label, id, id2; an array label sets flag = its size, label = 0, and follows as float32), framed as
dmlc RecordIO by ``encode_record`` (tested byte-exact against mxnet files in test_data_recordio.py).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from cdface.data.datasets import RecordIODataset
from cdface.data.decode import encode_jpeg
from cdface.data.recordio import RecordIOReader
from cdface.data.recordio_format import IRHeader, encode_record
from cdface.data.recordio_layout import detect_layout, float32_tolerance
from cdface.data.recordio_writer import write_insightface_rec
from cdface.errors import FormatError


def _jpeg(value: int) -> bytes:
    return encode_jpeg(np.full((16, 16, 3), value, np.uint8))


def _ir(flag: int, label: float, id_: int = 0, id2: int = 0) -> bytes:
    return struct.pack("<IfQQ", flag, label, id_, id2)


def _im2rec_record(key: int, labels: list[float], image: bytes, pack_label: bool) -> bytes:
    """tools/im2rec.py: IRHeader(0, label(s), index, 0) through mx.recordio.pack_img."""
    if pack_label:
        return _ir(len(labels), 0.0, key) + np.asarray(labels, "<f4").tobytes() + image
    return _ir(0, labels[0], key) + image


def _write(path: Path, records: list[tuple[int, bytes]]) -> Path:
    """.rec + .idx in the given order (im2rec writes in .lst order: keys may be shuffled)."""
    offset, idx = 0, []
    with open(path, "wb") as rec:
        for key, payload in records:
            data = encode_record(payload)
            rec.write(data)
            idx.append(f"{key}\t{offset}\n")
            offset += len(data)
    path.with_suffix(".idx").write_text("".join(idx))
    return path


@pytest.mark.parametrize("pack_label", [True, False])
@pytest.mark.parametrize("first_class", [0, 5])
def test_im2rec_files_read_every_record_as_an_image(tmp_path, pack_label, first_class):
    """im2rec with or without --pack-label, shuffled and sparse keys, any class at key 0: all images, right labels."""
    lst = [(0, first_class), (7, 2), (3, 0), (12, 5), (1, 2), (9, first_class)]  # (index, class), .lst order
    rng = np.random.default_rng(first_class)
    rng.shuffle(lst)
    records = [(k, _im2rec_record(k, [float(c), 0.0], _jpeg(10 * k), pack_label)) for k, c in lst]
    rec = _write(tmp_path / "train.rec", records)
    layout = RecordIOReader(rec).layout()
    assert layout.header_key is None and layout.image_keys.tolist() == sorted(k for k, _ in lst)
    ds = RecordIODataset(rec, cache_labels=False)
    expected = dict(lst)
    assert len(ds) == len(lst)
    assert ds.class_ids[ds.labels].tolist() == [expected[k] for k in ds.image_keys.tolist()]
    for i, key in enumerate(ds.image_keys.tolist()):
        assert abs(int(ds.load_image(i).mean()) - 10 * key) <= 2


def _insightface_records(labels: list[int], image_flag: int = 0) -> list[tuple[int, bytes]]:
    """insightface's layout: header 0 = [images end, ids end], images 1..N, identity records [first, end)."""
    n = len(labels)
    classes = sorted(set(labels))
    end, ids_end = n + 1, n + 1 + len(classes)
    out = [(0, _ir(2, 0.0) + np.array([end, ids_end], "<f4").tobytes())]
    for key, c in enumerate(labels, start=1):
        if image_flag:
            out.append((key, _ir(2, 0.0, key) + np.array([c, 0], "<f4").tobytes() + _jpeg(c * 20)))
        else:
            out.append((key, _ir(0, float(c), key) + _jpeg(c * 20)))
    for j, c in enumerate(classes):
        keys = [k for k, lab in enumerate(labels, start=1) if lab == c]
        out.append((end + j, _ir(2, 0.0) + np.array([keys[0], keys[-1] + 1], "<f4").tobytes()))
    return out


@pytest.mark.parametrize("image_flag", [0, 2])
def test_insightface_layout_from_its_header(tmp_path, image_flag):
    labels = [0, 0, 0, 1, 1, 2, 2, 2]
    rec = _write(tmp_path / "train.rec", _insightface_records(labels, image_flag))
    layout = RecordIOReader(rec).layout()
    assert layout.header_key == 0 and layout.image_range == (1, 9) and layout.identity_range == (9, 12)
    ds = RecordIODataset(rec, cache_labels=False)
    assert ds.labels.tolist() == labels and ds.image_keys.tolist() == list(range(1, 9))


def test_header_that_disagrees_with_the_records_is_an_error(tmp_path):
    records = _insightface_records([0, 0, 1, 1])
    for end in (3, 6):  # says images end before / after the real boundary (key 5)
        records[0] = (0, _ir(2, 0.0) + np.array([end, 7], "<f4").tobytes())
        rec = _write(tmp_path / "train.rec", records)
        with pytest.raises(FormatError, match=r"train\.rec, record 0: image records at keys 1\.\.\d.*disagree"):
            RecordIODataset(rec, cache_labels=False)
    records = _insightface_records([0, 0, 1, 1])
    rec = _write(tmp_path / "train.rec", records[:2] + records[3:])  # image key 2 missing from the index
    with pytest.raises(FormatError, match=r"every image key 1\.\.4 in the index, found 3"):
        RecordIODataset(rec, cache_labels=False)
    records[0] = (0, _ir(2, 0.0) + np.array([5, 6], "<f4").tobytes())  # a key (7) the header does not cover
    with pytest.raises(FormatError, match=r"identities end 6\), the index has 7 keys up to 6"):
        RecordIODataset(_write(tmp_path / "train.rec", records), cache_labels=False)


def test_missing_identity_records_only_warn(tmp_path, caplog):
    """Training reads the images only: a file without the identity records its header announces still loads."""
    records = _insightface_records([0, 0, 1, 1])
    rec = _write(tmp_path / "train.rec", records[:5])  # header [5, 7], images 1..4, no identity records
    with caplog.at_level("WARNING", logger="cdface.data"):
        ds = RecordIODataset(rec, cache_labels=False)
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert any("identity records 5..6, the index has 0 of them" in r.getMessage() for r in caplog.records)


def test_identity_record_among_images_is_refused_not_trained_on(tmp_path):
    """An im2rec-looking file (no header) holding a label-only record: an error naming it, not a bad sample."""
    records = [(k, _im2rec_record(k, [1.0], _jpeg(k), False)) for k in range(4)]
    records[2] = (2, _ir(2, 0.0) + np.array([1, 3], "<f4").tobytes())
    rec = _write(tmp_path / "train.rec", records)
    with pytest.raises(FormatError, match=r"record 2: an image record, found a record without image"):
        RecordIODataset(rec, cache_labels=False)


class _HugeIndex:
    """An insightface-layout key space far above 2**24 without the records: header, images, identities.

    ``true_end`` is the first identity key (images are 1..true_end-1); the header stores it, and the
    identities end, as float32, exactly as mxnet's IRHeader does.
    """

    rec_path = Path("webface42m/train.rec")
    idx_path = Path("webface42m/train.idx")

    def __init__(self, true_end: int, identities: int, header_end: float | None = None) -> None:
        self.end, self.ids_end = true_end, true_end + identities
        stored = true_end if header_end is None else header_end
        self.header = np.array([stored, self.ids_end], dtype=np.float32)
        self.reads: list[int] = []

    def __len__(self) -> int:
        return self.ids_end

    def __contains__(self, key: object) -> bool:
        return 0 <= int(key) < self.ids_end

    @property
    def max_key(self) -> int:
        return self.ids_end - 1

    def count_keys(self, lo: int, hi: int) -> int:
        return max(0, min(hi, self.ids_end) - max(lo, 0))

    def sorted_keys(self) -> np.ndarray:  # only im2rec's layout needs every key
        raise AssertionError("the insightface layout must not list 40M keys")

    def read(self, key: int) -> tuple[IRHeader, bytes]:
        self.reads.append(key)
        if key == 0:
            return IRHeader(2, self.header.copy(), 0, 0), b""
        if key < self.end:
            return IRHeader(0, 7.0, key, 0), b"\xff\xd8\xff jpeg"
        return IRHeader(2, np.array([1.0, 2.0], np.float32), 0, 0), b""


@pytest.mark.parametrize(
    "true_end",
    [
        42_474_558,  # WebFace42M: 42,474,557 images; float32 stores 42,474,560 (rounded up)
        2**24 + 5,  # float32 stores 2**24 + 4 (rounded down: the last image would be dropped)
        2**24 + 3,  # a tie, rounded to even: 2**24 + 4
        2**26 + 7,
    ],
)
def test_image_boundary_above_2_24_is_found_from_the_records(true_end):
    index = _HugeIndex(true_end, identities=2_059_906)
    stored = int(index.header[0])
    assert stored != true_end and abs(stored - true_end) <= float32_tolerance(stored)
    layout = detect_layout(index)
    assert layout.image_range == (1, true_end) and layout.num_images == true_end - 1
    assert layout.identity_range == (true_end, index.ids_end)
    assert len(index.reads) <= 12  # a binary search over the few keys the float stands for


def test_float32_tolerance_matches_float32_rounding():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.integers(1, 2**24, 500), rng.integers(2**24, 2**31, 2000)])
    stored = values.astype(np.float32).astype(np.int64)
    tol = np.array([float32_tolerance(s) for s in stored])
    assert (np.abs(stored - values) <= tol).all()
    assert (tol[values < 2**24] == 0).all() and (stored[values < 2**24] == values[values < 2**24]).all()


def test_huge_header_off_by_more_than_float32_can_be_is_an_error():
    index = _HugeIndex(42_474_558, identities=1000, header_end=42_474_558 + 64)
    expected = r"record 0: image records at keys 1\.\.42474623 \(float32 label, \+-4\).*disagree"
    with pytest.raises(FormatError, match=expected):
        detect_layout(index)


def test_writer_keeps_class_ids_exact_in_float32(tmp_path):
    with pytest.raises(ValueError, match=r"class ids must be in 0\.\.2\*\*24-1"):
        write_insightface_rec(tmp_path, [0, 2**24], [b"a", b"b"])
    paths = write_insightface_rec(tmp_path, [0, 2**24 - 1], [_jpeg(1), _jpeg(2)])
    assert RecordIODataset(paths["rec"], cache_labels=False).class_ids.tolist() == [0, 2**24 - 1]
