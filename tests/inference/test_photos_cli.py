"""`--detect` and several-face `--landmarks` in `cdface embed | compare | search`, with a fake detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inference_helpers import MeanColor
from inference_mock_data import IDENTITY_COLOURS
from photo_helpers import FakeDetector, write_photo

import cdface.detect
from cdface.cli import main
from cdface.inference.export import export_onnx


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("m") / "colour.onnx"
    assert export_onnx(MeanColor().eval(), path, dynamic_batch=True).ok
    return str(path)


@pytest.fixture
def detector(monkeypatch) -> FakeDetector:
    fake = FakeDetector()
    specs = []

    def create_detector(spec=None):
        specs.append(spec)
        return fake

    monkeypatch.setattr(cdface.detect, "create_detector", create_detector, raising=False)
    fake.specs = specs
    return fake


def _identity(rows: np.ndarray) -> np.ndarray:
    """Which identity colour each embedding row points to, and check it points there clearly."""
    colours = IDENTITY_COLOURS / np.linalg.norm(IDENTITY_COLOURS, axis=1, keepdims=True)
    cosines = rows @ colours.T
    assert (cosines.max(axis=1) > 0.98).all(), cosines
    return cosines.argmax(axis=1)


def _embed(*args: str) -> int:
    return main(["embed", *args, "--workers", "0", "--no-progress"])


def test_embed_detect_gives_one_row_per_face_and_lists_photos_without_one(colour_model, detector, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    group = write_photo(photos / "group.png", [0, 1, 2], detector)
    write_photo(photos / "single.png", [3], detector, seed=1, extra_rows=5)
    write_photo(photos / "empty.png", [], detector, extra_rows=7)
    out = tmp_path / "f.npy"
    assert _embed(str(photos), "--model", colour_model, "--out", str(out), "--detect") == 0
    assert detector.specs == [None]  # the default detector
    feats = np.load(out)
    names = (tmp_path / "f.paths.txt").read_text().splitlines()
    assert feats.shape == (4, 3)
    assert names[0] == f"{photos / 'group.png'}#face1 box=" + ",".join(str(int(round(v))) for v in group[0].box)
    assert [n.split(" ")[0] for n in names] == [f"{photos / 'group.png'}#face{k}" for k in (1, 2, 3)] + [
        f"{photos / 'single.png'}#face1"]
    assert _identity(feats).tolist() == [0, 1, 2, 3]  # each row is its own face, aligned with its points
    skipped = (tmp_path / "f.skipped.txt").read_text()
    assert "empty.png: no face found (fake)" in skipped
    faces = json.loads((tmp_path / "f.faces.json").read_text())
    assert [f["row"] for f in faces["faces"]] == [0, 1, 2, 3]
    assert faces["faces"][1]["score"] == pytest.approx(group[1].score)
    assert faces["faces"][1]["box"] == pytest.approx(group[1].box.tolist(), abs=0.01)
    assert faces["detector"] == "fake" and faces["photos"] == 3


def test_embed_detect_filters(colour_model, detector, tmp_path):
    photo = tmp_path / "group.png"
    write_photo(photo, [0, 1, 2], detector, scores=[0.6, 0.99, 0.95])
    out = tmp_path / "f.npy"
    assert _embed(str(photo), "--model", colour_model, "--out", str(out), "--detect", "--max-faces", "1") == 0
    assert _identity(np.load(out)).tolist() == [1]  # the highest-scored face
    assert _embed(str(photo), "--model", colour_model, "--out", str(out), "--detect", "--min-score", "0.9") == 0
    assert _identity(np.load(out)).tolist() == [1, 2]
    big = (tmp_path / "f.paths.txt").read_text()
    assert "#face1" in big and "#face2" in big
    # no face survives the filters: one line, exit 2, the reason named
    assert _embed(str(photo), "--model", colour_model, "--out", str(out), "--detect", "--min-face-size", "1e4") == 2


def test_embed_detect_with_no_face_anywhere_is_one_line(colour_model, detector, tmp_path, capsys):
    write_photo(tmp_path / "empty.png", [], detector)
    code = _embed(str(tmp_path / "empty.png"), "--model", colour_model, "--out", str(tmp_path / "f.npy"),
                  "--detect")
    err = capsys.readouterr().err
    assert code == 2 and "empty.png" in err and "no face found" in err and "Traceback" not in err
    assert not (tmp_path / "f.npy").exists()


def test_face_filters_without_detect_are_refused(colour_model, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(tmp_path / "a.png")
    assert _embed(str(tmp_path / "a.png"), "--model", colour_model, "--out", str(tmp_path / "f.npy"),
                  "--min-score", "0.5") == 2
    assert "--detect" in capsys.readouterr().err


def test_detect_option_refuses_the_images_as_detector(colour_model, tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["embed", "--detect", str(tmp_path / "photos"), "--model", colour_model, "--out", "x.npy"])
    assert exc.value.code == 2 and "put --detect after them" in capsys.readouterr().err


def test_embed_landmarks_with_several_lines_for_one_photo(colour_model, tmp_path):
    detector = FakeDetector()  # used only to draw the photo and its faces' points
    faces = write_photo(tmp_path / "group.png", [2, 0], detector)
    write_photo(tmp_path / "one.png", [1], detector, seed=3, extra_rows=3)
    one = detector.faces[(243, 240)][0]
    lines = [f"group.png {' '.join(f'{v:.4f}' for v in f.landmarks.reshape(-1))}" for f in faces]
    lines.append(f"one.png {' '.join(f'{v:.4f}' for v in one.landmarks.reshape(-1))}")
    (tmp_path / "lmk.txt").write_text("\n".join(lines + lines[:1]) + "\n")  # a repeated line is one face
    (tmp_path / "list.txt").write_text("group.png\none.png\n")
    out = tmp_path / "f.npy"
    assert _embed(str(tmp_path / "list.txt"), "--model", colour_model, "--out", str(out), "--landmarks",
                  str(tmp_path / "lmk.txt")) == 0
    assert _identity(np.load(out)).tolist() == [2, 0, 1]
    assert (tmp_path / "f.paths.txt").read_text().splitlines() == [
        f"{tmp_path / 'group.png'}#face1", f"{tmp_path / 'group.png'}#face2", str(tmp_path / "one.png")]


def test_compare_detect_refuses_a_side_without_a_face(colour_model, detector, tmp_path, capsys):
    write_photo(tmp_path / "a.png", [0], detector)
    write_photo(tmp_path / "texture.png", [], detector, extra_rows=9)
    code = main(["compare", str(tmp_path / "a.png"), str(tmp_path / "texture.png"), "--model", colour_model,
                 "--threshold", "-1", "--detect"])
    captured = capsys.readouterr()
    assert code == 2 and "same person" not in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "texture.png" in lines[0] and "no face found" in lines[0]


def test_compare_finds_the_faces_of_photos_without_being_asked(colour_model, detector, tmp_path, capsys):
    # a whole photo is not a crop: compared as it was (resized), a group photo and a picture without a face
    # came out "same person"; now the default detector runs, and the side without a face is refused
    write_photo(tmp_path / "a.png", [0], detector)
    write_photo(tmp_path / "texture.png", [], detector, extra_rows=9)
    code = main(["compare", str(tmp_path / "a.png"), str(tmp_path / "texture.png"), "--model", colour_model,
                 "--threshold", "-1"])
    captured = capsys.readouterr()
    assert code == 2 and "same person" not in captured.out and detector.specs == [None]
    assert "not an aligned 112x112 crop" in captured.err
    assert "texture.png" in captured.err.strip().splitlines()[-1]
    # --no-detect: the images as they are (the old behaviour, for users who know what they compare)
    assert main(["compare", str(tmp_path / "a.png"), str(tmp_path / "texture.png"), "--model", colour_model,
                 "--threshold", "-1", "--no-detect"]) == 0
    assert detector.specs == [None]


def test_compare_detect_uses_the_largest_face(colour_model, detector, tmp_path, capsys):
    faces = write_photo(tmp_path / "group.png", [0, 1], detector, scores=[0.99, 0.98])
    # make the second (lower-scored) face the larger one
    detector.faces[(240, 480)] = [faces[0], type(faces[1])(faces[1].box + np.array([-30, -30, 30, 30], np.float32),
                                                         faces[1].score, faces[1].landmarks)]
    write_photo(tmp_path / "b.png", [1], detector, seed=5, extra_rows=2)
    assert main(["compare", str(tmp_path / "group.png"), str(tmp_path / "b.png"), "--model", colour_model,
                 "--threshold", "0.9", "--detect", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["same"] is True and result["cosine"] > 0.98  # identity 1 on both sides
    assert result["face_a"]["faces"] == 2 and result["face_a"]["score"] == pytest.approx(0.98)
    assert "2 faces; comparing the largest (face 2" in captured.err


def test_search_over_a_gallery_of_photos(colour_model, detector, tmp_path, capsys):
    gallery = tmp_path / "gallery"
    (gallery / "ann").mkdir(parents=True)
    (gallery / "bob").mkdir()
    write_photo(gallery / "ann" / "1.png", [0], detector)
    write_photo(gallery / "bob" / "1.png", [1, 2], detector, seed=1)  # bob with a stranger of identity 2
    write_photo(tmp_path / "probe.png", [3, 1], detector, seed=2, extra_rows=4)
    code = main(["search", "--gallery", str(gallery), "--query", str(tmp_path / "probe.png"), "--model",
                 colour_model, "--detect", "--k", "1", "--json", "--device", "cpu", "--workers", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = json.loads(captured.out)
    assert [r["query_path"].split(" ")[0] for r in rows] == [f"{tmp_path / 'probe.png'}#face{k}" for k in (1, 2)]
    assert rows[1]["results"][0]["path"].startswith(f"{gallery / 'bob' / '1.png'}#face1 box=")  # identity 1
    assert rows[1]["results"][0]["score"] > 0.98 and rows[0]["results"][0]["score"] < 0.9  # 3 is in no photo


def test_search_images_need_a_model_and_npy_take_no_detect(colour_model, tmp_path, capsys):
    np.save(tmp_path / "g.npy", np.eye(3, dtype=np.float32))
    assert main(["search", "--gallery", str(tmp_path / "g.npy"), "--query", str(tmp_path), "--k", "1"]) == 2
    assert "give --model" in capsys.readouterr().err
    assert main(["search", "--gallery", str(tmp_path / "g.npy"), "--query", str(tmp_path / "g.npy"), "--detect"]
                ) == 2
    assert "--detect finds faces in photos" in capsys.readouterr().err


def test_the_rows_of_one_photo_decode_it_once(tmp_path, monkeypatch):
    import cdface.data.decode as decode
    from cdface.inference.extract import ImageFiles

    detector = FakeDetector()
    faces = write_photo(tmp_path / "group.png", [0, 1, 2], detector)
    write_photo(tmp_path / "one.png", [3], detector, extra_rows=1)
    calls = []
    real = decode.decode_image
    monkeypatch.setattr(decode, "decode_image", lambda data, *a, **k: calls.append(a[0]) or real(data, *a, **k))
    rows = [str(tmp_path / "group.png")] * 3 + [str(tmp_path / "one.png")]
    landmarks = np.stack([f.landmarks for f in faces] + [detector.faces[(241, 240)][0].landmarks])
    dataset = ImageFiles(rows, landmarks)
    items = [dataset[i] for i in range(4)]
    assert calls == [rows[0], rows[3]]  # one decode per photo, not per face
    colours = np.stack([it[1].reshape(-1, 3).mean(axis=0) / 127.5 - 1 for it in items])
    assert _identity(colours / np.linalg.norm(colours, axis=1, keepdims=True)).tolist() == [0, 1, 2, 3]


def test_landmark_keys_with_windows_separators(colour_model, tmp_path):
    detector = FakeDetector()
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    faces = write_photo(tmp_path / "photos" / "sub" / "a.png", [1], detector)
    coords = " ".join(f"{v:.4f}" for v in faces[0].landmarks.reshape(-1))
    (tmp_path / "lmk.txt").write_text(f"sub\\a.png {coords}\r\n")  # written on Windows
    out = tmp_path / "f.npy"
    assert _embed(str(tmp_path / "photos"), "--model", colour_model, "--out", str(out), "--landmarks",
                  str(tmp_path / "lmk.txt")) == 0
    assert _identity(np.load(out)).tolist() == [1]
