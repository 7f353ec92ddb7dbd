"""`cdface eval --targets FOLDER [--detect]`: a pair set in LFW's layout (pairs.txt), photos detected and aligned."""

from __future__ import annotations

import json

import pytest
from inference_helpers import MeanColor
from photo_helpers import FakeDetector, write_photo

import cdface.detect
from cdface.cli import main
from cdface.inference.export import export_onnx

NAMES = ("Ann_A", "Bob_B", "Cid_C", "Dee_D")


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("m") / "colour.onnx"
    assert export_onnx(MeanColor().eval(), path, dynamic_batch=True).ok
    return str(path)


@pytest.fixture
def lfw_folder(tmp_path, monkeypatch):
    """4 identities x 3 photos (LFW naming), one of Dee's photos has no face; 12 genuine + 12 impostor pairs."""
    detector = FakeDetector()
    monkeypatch.setattr(cdface.detect, "create_detector", lambda spec=None: detector, raising=False)
    root = tmp_path / "lfw"
    rows = 0
    for identity, name in enumerate(NAMES):
        (root / name).mkdir(parents=True)
        for k in (1, 2, 3):
            faces = [] if (name == "Dee_D" and k == 3) else [identity]
            write_photo(root / name / f"{name}_{k:04d}.png", faces, detector, seed=rows, extra_rows=rows)
            (root / name / f"{name}_{k:04d}.png").rename(root / name / f"{name}_{k:04d}.jpg")
            rows += 1
    genuine = [f"{n} {i} {j}" for n in NAMES for i, j in ((1, 2), (1, 3), (2, 3))]
    impostor = [f"{NAMES[a]} {i} {NAMES[(a + 1) % 4]} {j}" for a in range(4) for i, j in ((1, 1), (2, 3), (3, 2))]
    (root / "pairs.txt").write_text("1 12\n" + "\n".join(genuine + impostor) + "\n")
    return root


def test_eval_folder_pairs_with_detect(colour_model, lfw_folder, capsys):
    code = main(["eval", "--model", colour_model, "--targets", str(lfw_folder), "--detect", "--json",
                 "--no-progress", "--workers", "0", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(captured.out)[str(lfw_folder)]
    # Dee_0003 has no face: its 2 genuine and 2 impostor pairs are left out, the rest is perfectly separated
    assert metrics["pairs_without_face"] == 4 and metrics["accuracy"] == 1.0
    assert "4 of 24 pairs left out" in captured.err


def test_eval_folder_pairs_without_detect_uses_the_images_as_they_are(colour_model, lfw_folder, capsys):
    code = main(["eval", "--model", colour_model, "--targets", str(lfw_folder), "--json", "--no-progress",
                 "--workers", "0", "--device", "cpu"])
    metrics = json.loads(capsys.readouterr().out)[str(lfw_folder)]
    # the whole canvas (its colour another identity's) is embedded: worse than the aligned faces
    assert code == 0 and metrics["pairs_without_face"] == 0 and metrics["accuracy"] < 1.0


def test_folder_without_pairs_txt(colour_model, tmp_path, capsys):
    (tmp_path / "faces").mkdir()
    assert main(["eval", "--model", colour_model, "--targets", str(tmp_path / "faces"), "--no-progress"]) == 2
    assert "pairs.txt" in capsys.readouterr().err


def test_detect_on_a_bin_target_is_refused_not_ignored(colour_model, tiny_face_set, capsys):
    # `--detect` on a .bin was dropped without a word and the crops scored as they are
    code = main(["eval", "--model", colour_model, "--targets", str(tiny_face_set["bin"]), "--detect", "--json",
                 "--no-progress", "--workers", "0", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.strip().splitlines()[-1].startswith("cdface eval: error: --detect finds faces in the photos")
