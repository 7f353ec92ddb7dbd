"""Training datasets: contract, label mapping, bad-sample substitution, DataLoader workers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cdface.data.bad_samples import BadSampleTracker
from cdface.data.datasets import (
    ImageFolderDataset,
    ImageListDataset,
    InMemoryDataset,
    RecordIODataset,
    build_train_dataset,
)
from cdface.data.decode import decode_image, encode_jpeg
from cdface.data.recordio import RecordIOReader
from cdface.data.recordio_format import IRHeader, pack_header
from cdface.data.recordio_writer import RecordIOWriter, write_insightface_rec
from cdface.data.transforms import EvalTransform, TrainTransform
from cdface.errors import ConfigError, FormatError

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "realfaces"
needs_shared = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/realfaces not present")


def _faces(n: int, seed: int = 0) -> np.ndarray:
    """Distinct flat-coloured images (each decodes to a recognisable mean colour)."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(30, 225, (n, 1, 1, 3))
    return np.broadcast_to(colors, (n, 112, 112, 3)).astype(np.uint8).copy()


def _write_rec(tmp_path: Path, labels, corrupt=()) -> tuple[Path, np.ndarray]:
    images = _faces(len(labels))
    jpegs = [encode_jpeg(im) for im in images]
    for i in corrupt:
        jpegs[i] = jpegs[i][:40]  # truncated JPEG
    write_insightface_rec(tmp_path, labels, jpegs)
    return tmp_path, images


def _check_contract(dataset, n: int, classes: int) -> None:
    assert len(dataset) == n and dataset.num_classes == classes
    assert dataset.labels.dtype == np.int64 and dataset.labels.shape == (n,)
    groups = dataset.class_to_indices()
    assert len(groups) == classes and sum(len(g) for g in groups) == n
    for c, g in enumerate(groups):
        assert (dataset.labels[g] == c).all()
    image, label, index, bad = dataset[n - 1]
    assert image.shape == (3, 112, 112) and image.dtype == torch.float32
    assert (label, index, bad) == (int(dataset.labels[n - 1]), n - 1, -1)


def test_recordio_dataset_maps_labels_and_matches_images(tmp_path):
    labels = np.array([5, 9, 5, 30, 9, 5])  # not contiguous: mapped to 0..2 in sorted order
    root, images = _write_rec(tmp_path, labels)
    ds = RecordIODataset(root)
    _check_contract(ds, 6, 3)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 2] and ds.class_ids.tolist() == [5, 9, 30]
    order = np.argsort(labels, kind="stable")  # the writer groups by class
    for i in range(6):
        np.testing.assert_allclose(ds.load_image(i).mean((0, 1)), images[order[i], 0, 0], atol=2)
    assert RecordIODataset(root / "train.rec").labels.tolist() == ds.labels.tolist()  # from the cache


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_label_cache_goes_to_the_cache_dir_never_beside_the_data(tmp_path, monkeypatch):
    data, cache = tmp_path / "ro_data", tmp_path / "xdg"
    data.mkdir()
    _write_rec(data, [0, 1, 1, 2])
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    before = _tree(data)
    data.chmod(0o555)  # read-only folder (root may still write: the listing below is the real check)
    try:
        ds = RecordIODataset(data)
        assert ds.labels.tolist() == [0, 1, 1, 2] and ds[3][1] == 2
        assert _tree(data) == before  # nothing written, touched or left beside the data
        cached = sorted((cache / "cdface").glob("train.rec.labels-*.npz"))
        assert len(cached) == 1
        with np.load(cached[0], allow_pickle=False) as z:
            assert z["keys"].tolist() == [1, 2, 3, 4] and z["labels"].tolist() == [0, 1, 1, 2]
        # a configured cache_dir wins; label_cache off writes nothing anywhere
        own = tmp_path / "own_cache"
        assert RecordIODataset(data, cache_dir=own).labels.tolist() == [0, 1, 1, 2]
        assert len(list(own.glob("train.rec.labels-*.npz"))) == 1
        RecordIODataset(data, cache_labels=False, cache_dir=tmp_path / "never")
        assert not (tmp_path / "never").exists() and _tree(data) == before
        # an unwritable cache location is not an error
        (tmp_path / "blocker").write_text("a file, not a folder")
        assert RecordIODataset(data, cache_dir=tmp_path / "blocker" / "sub").labels.tolist() == [0, 1, 1, 2]
    finally:
        data.chmod(0o755)


def test_recordio_label_cache_is_invalidated(tmp_path):
    root, _ = _write_rec(tmp_path, [0, 1, 1])
    RecordIODataset(root, cache_dir=tmp_path / "c")
    _write_rec(tmp_path, [0, 0, 1, 2])
    assert RecordIODataset(root, cache_dir=tmp_path / "c").labels.tolist() == [0, 0, 1, 2]
    assert len(list((tmp_path / "c").glob("*.npz"))) == 2  # keyed by size and mtime: a new entry


def test_im2rec_layout_dataset(tmp_path):
    with RecordIOWriter(tmp_path / "x.rec") as writer:
        for key, label in enumerate([1, 0, 1]):
            writer.write(key, pack_header(IRHeader(0, float(label), key, 0), encode_jpeg(_faces(1)[0])))
    ds = RecordIODataset(tmp_path / "x.rec")
    assert ds.image_keys.tolist() == [0, 1, 2] and ds.labels.tolist() == [1, 0, 1]


@needs_shared
def test_real_recordio_dataset():
    ds = RecordIODataset(REAL, cache_labels=False)
    _check_contract(ds, 640, 16)
    assert [len(g) for g in ds.class_to_indices()] == [40] * 16


def test_corrupt_jpeg_is_substituted_counted_and_logged(tmp_path, caplog):
    labels = [0, 0, 0, 1, 1, 1]
    root, _ = _write_rec(tmp_path, labels, corrupt=(1,))
    ds = RecordIODataset(root)
    with caplog.at_level(logging.WARNING, logger="cdface.data"):
        image, label, index, bad = ds[1]
        again = ds[1]
    assert (label, index, bad) == (0, 2, 1)  # next sample of the same class
    assert again[2:] == (2, 1) and ds.num_bad == 1
    assert torch.equal(image, ds[2][0])
    assert sum("record 2" in r.getMessage() for r in caplog.records) == 1  # key 2 = index 1, logged once
    tracker = BadSampleTracker(max_bad_fraction=0.2, source="train.rec")
    batch = [ds[i] for i in range(6)]
    tracker.update(torch.tensor([b[3] for b in batch]))
    report = tracker.end_epoch()
    assert (report.seen, report.bad, report.bad_indices) == (6, 1, (1,))
    tracker.update(torch.tensor([1, -1, 4, -1]))
    with pytest.raises(FormatError, match=r"train\.rec, epoch 1: at most 20.00% corrupt samples, found 2 of 4"):
        tracker.end_epoch()


def test_whole_class_corrupt(tmp_path):
    # (the limit on the corrupt fraction is the trainer's BadSampleTracker's, over every worker)
    root, _ = _write_rec(tmp_path, [0, 0, 1], corrupt=(0, 1))
    with pytest.raises(FormatError, match="class 0"):
        RecordIODataset(root)[0]


def test_dataloader_with_two_workers(tmp_path):
    labels = np.repeat(np.arange(4), 6)
    root, _ = _write_rec(tmp_path, labels, corrupt=(3,))
    ds = RecordIODataset(root, transform=TrainTransform(), seed=7)
    loader = DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    images, got_labels, indices, bad = (torch.cat(t) for t in zip(*loader))
    assert images.shape == (24, 3, 112, 112)
    assert got_labels.tolist() == labels.tolist()
    expected = list(range(24))
    expected[3] = 4
    assert indices.tolist() == expected and bad.tolist() == [-1, -1, -1, 3] + [-1] * 20
    # augmentation depends on (seed, epoch, index) only: same tensors in the main process
    for i in (0, 10, 23):
        assert torch.equal(images[i], ds[i][0])


def test_image_folder_and_list(tmp_path):
    images = _faces(5)
    for i, (cls, name) in enumerate(
        [("bob", "1.jpg"), ("amy", "a.png"), ("amy", "b.jpg"), ("cat", "x.jpg"), ("bob", "2.jpg")]
    ):
        (tmp_path / "imgs" / cls).mkdir(parents=True, exist_ok=True)
        path = tmp_path / "imgs" / cls / name
        if name.endswith(".png"):
            from PIL import Image

            Image.fromarray(images[i]).save(path)
        else:
            path.write_bytes(encode_jpeg(images[i]))
    (tmp_path / "imgs" / "empty").mkdir()
    folder = ImageFolderDataset(tmp_path / "imgs")
    _check_contract(folder, 5, 3)
    assert folder.class_names == ["amy", "bob", "cat"] and folder.labels.tolist() == [0, 0, 1, 1, 2]
    np.testing.assert_array_equal(folder.load_image(0), images[1])  # PNG is lossless
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\nimgs/bob/1.jpg 7\n\nimgs/amy/a.png 3\n")
    listed = ImageListDataset(lst)
    assert listed.labels.tolist() == [1, 0] and listed.class_ids.tolist() == [3, 7]
    np.testing.assert_array_equal(listed.load_image(1), images[1])
    assert build_train_dataset("list", lst).labels.tolist() == [1, 0]
    lst.write_text("imgs/bob/1.jpg 7\nimgs/amy/a.png three\n")
    with pytest.raises(FormatError, match=r"list\.txt, line 2: .*'<path> <label >= 0>'"):
        ImageListDataset(lst)
    lst.write_text("justapath\n")
    with pytest.raises(FormatError, match="line 1"):
        ImageListDataset(lst)
    with pytest.raises(ConfigError):
        build_train_dataset("lmdb", tmp_path)


def test_in_memory_dataset():
    images = _faces(4)
    ds = InMemoryDataset(images, np.array([3, 3, 8, 8]), transform=EvalTransform())
    _check_contract(ds, 4, 2)
    expected = (torch.from_numpy(images[2]).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert torch.equal(ds[2][0], expected)


def test_decode_image_errors_name_source():
    with pytest.raises(FormatError, match=r"a\.rec, record 3: a decodable image"):
        decode_image(b"\xff\xd8\xff\xe0garbage", "a.rec", "record 3")


@pytest.mark.parametrize("data", [b"not an image at all", b"GIF89a broken", b"\x89PNG\r\n\x1a\n broken"])
def test_corrupt_image_message_is_one_clean_line(tmp_path, data, caplog):
    """The file is named once, with the record; no Python object repr (``<_io.BytesIO object at ...>``)."""
    path = tmp_path / "face_0002.jpg"
    path.write_bytes(data)
    (tmp_path / "ok.jpg").write_bytes(encode_jpeg(_faces(1)[0]))
    (tmp_path / "train.lst").write_text("ok.jpg 0\nface_0002.jpg 0\n")
    ds = ImageListDataset(tmp_path / "train.lst")
    with caplog.at_level(logging.WARNING, logger="cdface.data"):
        assert ds[1][2:] == (0, 1)
    [message] = [r.getMessage() for r in caplog.records]
    assert message.count(str(path)) == 1 and " object at 0x" not in message and "\n" not in message
    with pytest.raises(FormatError) as info:
        decode_image(data, "t.rec", "record 7")
    assert str(info.value).startswith("t.rec, record 7: a decodable image") and " at 0x" not in str(info.value)

    from cdface.inference.extract import ImageFiles

    _, image, error, _ = ImageFiles([path], skip_errors=True)[0]
    assert image is None and error.count(str(path)) == 1 and " at 0x" not in error


def test_missing_or_empty_data_path_says_what_is_missing(tmp_path):
    from cdface.config import config_from_dict
    from cdface.train.data_setup import build_training_data
    from cdface.train.distributed import DistInfo

    missing = tmp_path / "ms1m" / "train.rec"
    for kind in ("recordio", "folder", "list"):
        cfg = config_from_dict({"data": {"kind": kind, "path": str(missing)}})
        with pytest.raises(FormatError, match=rf"{missing}: .*(no such file|readable|image folder)"):
            build_training_data(cfg, DistInfo())
    with pytest.raises(FormatError, match=rf"{missing.parent}: no such file or folder \(expected a RecordIO"):
        build_train_dataset("recordio", missing.parent)
    with pytest.raises(FormatError, match=rf"{tmp_path}: is a folder; expected a RecordIO \.rec file"):
        RecordIOReader(tmp_path)
    with pytest.raises(ConfigError, match="data.path is empty"):
        build_training_data(config_from_dict({"data": {"kind": "recordio", "path": ""}}), DistInfo())


def test_training_on_a_read_only_dataset_writes_nothing_beside_it(tmp_path):
    """fit() on a chmod'ed read-only RecordIO folder: it trains, its label cache lands in data.cache_dir."""
    from cdface.config import config_from_dict
    from cdface.train.trainer import fit

    data = tmp_path / "faces"
    data.mkdir()
    _write_rec(data, np.repeat(np.arange(4), 4))
    before = _tree(data)
    data.chmod(0o555)
    try:
        cfg = config_from_dict({
            "name": "ro", "output_dir": str(tmp_path / "runs"), "batch_size": 8, "max_steps": 2, "device": "cpu",
            "tensorboard": False,
            "data": {"kind": "recordio", "path": str(data), "num_workers": 0, "cache_dir": str(tmp_path / "cache")},
            "model": {"arch": "iresnet_tiny", "embedding_size": 8},
        })
        result = fit(cfg)
    finally:
        data.chmod(0o755)
    assert result.step == 2
    assert _tree(data) == before
    assert len(list((tmp_path / "cache").glob("train.rec.labels-*.npz"))) == 1
