"""`cdface data pack --detect`: a RecordIO of aligned crops from folders of raw photos (fake detector)."""

from __future__ import annotations

import numpy as np
import pytest
from inference_mock_data import IDENTITY_COLOURS
from photo_helpers import FakeDetector, write_photo

import cdface.detect
from cdface.cli import main
from cdface.data.datasets import RecordIODataset
from cdface.detect import DetectedFace


@pytest.fixture
def photos(tmp_path, monkeypatch):
    detector = FakeDetector()
    monkeypatch.setattr(cdface.detect, "create_detector", lambda spec=None: detector, raising=False)
    root = tmp_path / "photos"
    for name in ("ann", "bob", "carl"):
        (root / name).mkdir(parents=True)
    write_photo(root / "ann" / "1.png", [0], detector)
    faces = write_photo(root / "ann" / "2.png", [3, 0], detector, seed=1, extra_rows=1, scores=[0.99, 0.9])
    bigger = DetectedFace(faces[1].box + np.float32([-40, -40, 40, 40]), faces[1].score, faces[1].landmarks)
    detector.faces[(241, 480)] = [faces[0], bigger]  # ann, the lower-scored face, is the larger one
    write_photo(root / "bob" / "1.png", [1], detector, seed=2, extra_rows=2)
    write_photo(root / "carl" / "none.png", [], detector, extra_rows=3)
    (root / "carl" / "._none.png").write_bytes(b"\x00\x05\x16\x07")
    return root


def _identities(rec_dir) -> tuple[list[int], list[int]]:
    dataset = RecordIODataset(rec_dir, cache_labels=False)
    colours = IDENTITY_COLOURS / np.linalg.norm(IDENTITY_COLOURS, axis=1, keepdims=True)
    found = []
    for i in range(len(dataset)):
        crop = dataset.load_image(i)
        assert crop.shape == (112, 112, 3)
        mean = crop.reshape(-1, 3).mean(axis=0) / 127.5 - 1.0  # the crop's colour in normalised units
        cosines = colours @ (mean / np.linalg.norm(mean))
        assert cosines.max() > 0.97, cosines  # aligned onto the face, not the canvas around it
        found.append(int(cosines.argmax()))
    return dataset.labels.tolist(), found


def test_pack_detect_packs_the_largest_face_of_each_photo(photos, tmp_path, capsys):
    assert main(["data", "pack", str(photos), str(tmp_path / "rec"), "--detect"]) == 0
    out = capsys.readouterr().out
    labels, identities = _identities(tmp_path / "rec")
    assert labels == [0, 0, 1] and identities == [0, 0, 1]  # ann twice (her larger face in 2.png), bob
    assert "packed 3 face(s) of 2 classes from 3 of 4 photos" in out and "carl" in out
    assert "none.png: no face found" in (tmp_path / "rec" / "skipped.txt").read_text()
    assert "ignored 1 hidden/system entry" in out


def test_pack_detect_all_faces(photos, tmp_path):
    assert main(["data", "pack", str(photos), str(tmp_path / "rec"), "--detect", "--all-faces"]) == 0
    labels, identities = _identities(tmp_path / "rec")
    assert labels == [0, 0, 0, 1] and identities == [0, 3, 0, 1]  # 2.png: both faces, in score order


def test_all_faces_needs_detect(photos, tmp_path, capsys):
    assert main(["data", "pack", str(photos), str(tmp_path / "rec"), "--all-faces"]) == 2
    assert "add --detect" in capsys.readouterr().err


def test_make_pairs_detect_stores_each_photos_largest_face_aligned(tmp_path, monkeypatch, capsys):
    from cdface.data.decode import decode_image
    from cdface.data.pairs_bin import load_bin

    detector = FakeDetector()
    monkeypatch.setattr(cdface.detect, "create_detector", lambda spec=None: detector, raising=False)
    root = tmp_path / "photos"
    rows = 0
    for identity in range(4):
        (root / f"id{identity}").mkdir(parents=True)
        for k in range(3):
            write_photo(root / f"id{identity}" / f"{k}.png", [identity], detector, seed=k, extra_rows=rows)
            rows += 1
    write_photo(root / "id0" / "none.png", [], detector, extra_rows=rows)  # a photo without a face
    out = tmp_path / "pairs.bin"
    assert main(["data", "make-pairs", str(root), "--out", str(out), "--pairs", "8", "--folds", "2",
                 "--detect"]) == 0
    assert "left out 1 photo(s) without a face" in capsys.readouterr().out
    pairs = load_bin(out)
    colours = IDENTITY_COLOURS / np.linalg.norm(IDENTITY_COLOURS, axis=1, keepdims=True)
    names = [line.split("\t")[2:] for line in out.with_name("pairs.pairs.txt").read_text().splitlines()[1:]]
    assert len(names) == 8 and not any("none.png" in n for pair in names for n in pair)
    for k, data in enumerate(pairs.images):
        crop = decode_image(data)
        assert crop.shape == (112, 112, 3)  # the aligned crop, not the 240-pixel photo
        mean = crop.reshape(-1, 3).mean(axis=0) / 127.5 - 1.0
        cosines = colours @ (mean / np.linalg.norm(mean))
        identity = int(names[k // 2][k % 2].split("/")[0].removeprefix("id"))
        assert cosines.argmax() == identity and cosines.max() > 0.97
