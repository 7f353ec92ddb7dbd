"""`cdface detect`: its JSON, table, crops and errors, with a stand-in detector (runs anywhere) and with the
real MTCNN on the shared photos (skipped when ../shared or the weights are absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import cdface.detect.registry as registry
from cdface.cli import main
from cdface.data.align import ARCFACE_TEMPLATE, align_face
from cdface.detect.face import DetectedFace


class _Stub:
    """Finds one face per photo wider than 50 pixels, two in photos wider than 80 (lower score first in its
    own output, to check the command's order is the detector's)."""

    name = "stub"

    def detect(self, image):
        faces = []
        if image.shape[1] > 50:
            faces.append(DetectedFace(np.array([1, 2, 40, 50], np.float32), 0.9, ARCFACE_TEMPLATE / 3 + 1))
        if image.shape[1] > 80:
            faces.append(DetectedFace(np.array([50, 2, 75, 30], np.float32), 0.6, ARCFACE_TEMPLATE / 5 + 50))
        return faces


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setattr(registry, "create_detector", lambda spec=None: _Stub())


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (60, 100, 3), dtype=np.uint8)).save(root / "two.png")
    Image.fromarray(rng.integers(0, 256, (60, 64, 3), dtype=np.uint8)).save(root / "sub" / "one.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / "sub" / "none.png")
    return root


def test_json_lists_every_photo_with_its_faces(stub, photos, tmp_path, capsys):
    out = tmp_path / "det.json"
    assert main(["detect", str(photos), "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    by_name = {rec["path"].rsplit("/", 1)[-1]: rec for rec in printed["images"]}
    assert set(by_name) == {"two.png", "one.jpg", "none.png"}
    assert (by_name["two.png"]["width"], by_name["two.png"]["height"]) == (100, 60)
    assert by_name["none.png"]["faces"] == []
    assert [f["score"] for f in by_name["two.png"]["faces"]] == [0.9, 0.6]
    face = by_name["one.jpg"]["faces"][0]
    assert face["box"] == [1.0, 2.0, 40.0, 50.0]
    assert np.allclose(face["landmarks"], ARCFACE_TEMPLATE / 3 + 1, atol=0.01)
    assert set(face) == {"box", "score", "landmarks"}


def test_table_and_photo_without_face_exit_0(stub, photos, capsys):
    assert main(["detect", str(photos / "sub" / "none.png")]) == 0
    captured = capsys.readouterr()
    assert "none.png  40x30  0 faces" in captured.out
    assert "0 face(s) in 1 photo(s), 1 without a face" in captured.err


def test_save_crops_writes_the_aligned_crops(stub, photos, tmp_path, capsys):
    crops = tmp_path / "crops"
    assert main(["detect", str(photos / "two.png"), str(photos / "sub"), "--json", "--save-crops", str(crops)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in crops.iterdir()) == ["one_1.png", "two_1.png", "two_2.png"]
    two = next(r for r in result["images"] if r["path"].endswith("two.png"))
    assert two["faces"][1]["crop"].endswith("two_2.png")
    photo = np.asarray(Image.open(photos / "two.png").convert("RGB"))
    want = align_face(photo, ARCFACE_TEMPLATE / 5 + 50)
    assert np.array_equal(np.asarray(Image.open(crops / "two_2.png")), want)


def test_unreadable_photo_in_a_folder_is_skipped_and_named(stub, photos, capsys):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert main(["detect", str(photos), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert len(result["images"]) == 3
    assert result["skipped"][0]["path"].endswith("broken.jpg")
    assert "skipped" in captured.err and "broken.jpg" in captured.err
    line = next(line for line in captured.err.splitlines() if "broken.jpg" in line)
    assert line.count("broken.jpg") == 1, line  # the photo named once, not "skipped X: X: ..."


def test_user_mistakes_are_one_line_exit_2(photos, tmp_path, capsys):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert main(["detect", str(photos / "broken.jpg"), "--detector", "nope"]) == 2
    assert main(["detect", str(photos), "--detector", "nope"]) == 2
    assert main(["detect", str(tmp_path / "missing.jpg")]) == 2
    assert main(["detect", str(photos), "--detector", str(tmp_path / "x.onnx")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 4 and all(line.startswith("cdface detect: error:") for line in lines)
    assert "unknown detector 'nope'" in lines[0] and "x.onnx" in lines[3]


def test_real_photos_with_mtcnn(shared_dir, mtcnn_weights, tmp_path, capsys):
    photos = shared_dir / "data" / "photos"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{photos / 'no_face_mask_texture.jpg'}\n{photos / 'tom_hanks.png'}\n")
    assert main(["detect", str(listing), "--json", "--save-crops", str(tmp_path / "crops")]) == 0
    result = json.loads(capsys.readouterr().out)
    no_face, crop = result["images"]
    assert no_face["faces"] == [] and (no_face["width"], no_face["height"]) == (680, 366)
    assert len(crop["faces"]) == 1 and crop["faces"][0]["score"] > 0.9
    assert result["detector"] == "mtcnn"
    aligned = np.asarray(Image.open(tmp_path / "crops" / "tom_hanks_1.png"))
    original = np.asarray(Image.open(photos / "tom_hanks.png").convert("RGB"))
    # the crop was aligned already: re-aligning it from the points found changes it little
    # (29 grey levels on average here; 42 with the points shifted by 8 pixels, 117 with the eyes swapped)
    assert np.abs(aligned.astype(int) - original.astype(int)).mean() < 35


def test_rec_is_refused(stub, tiny_face_set, capsys):
    assert main(["detect", str(tiny_face_set["rec"])]) == 2
    assert "aligned already" in capsys.readouterr().err


def test_folder_scan_says_what_it_passed_over(stub, photos, capsys):
    # a folder copied from a Mac: embed and data pack count these entries; detect dropped them without a word
    (photos / "._two.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (photos / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (photos / "notes.txt").write_text("not a photo\n")
    assert main(["detect", str(photos), "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["images"]) == 3
    assert "ignored 2 hidden/system entries" in captured.err and "1 file without an image suffix" in captured.err


def test_nothing_readable_is_an_error_not_an_empty_result(stub, tmp_path, capsys):
    # a list whose photos all fail gave {"images": []} and exit 0, as if every photo had been searched
    listing = tmp_path / "list.txt"
    listing.write_text("missing.jpg\nbroken.jpg\n")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert main(["detect", str(listing), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith("cdface detect: error:") and "list.txt" in error and "none of 2 could be read" in error


def test_out_in_a_new_folder_is_written(stub, photos, tmp_path, capsys):
    # the JSON's folder was not made: after the whole detection, an error naming a temporary file
    out = tmp_path / "results" / "faces.json"
    assert main(["detect", str(photos), "--json", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out)


def test_crop_names_number_the_stems_two_photos_share(tmp_path):
    from cdface.detect.cli import _crop_names

    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png", tmp_path / "y.jpg", tmp_path / "x_1.jpg"]
    names = _crop_names(paths)
    assert names == ["00000_x", "00001_x", "y", "x_1"]
    assert len({f"{n}_1" for n in names}) == len(names)  # no two photos write the same crop file
