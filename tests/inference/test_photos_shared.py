"""The photo pipeline with the real default detector on the real photos of ../shared/data/photos (skipped when
../shared or the detector is absent): embed --detect, compare refusing a photo without a face, search from a photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cdface.detect
from cdface.cli import main

IMAGENET = ["--input-mean", "0.485,0.456,0.406", "--input-std", "0.229,0.224,0.225"]


@pytest.fixture
def photos(shared_dir):
    if not hasattr(cdface.detect, "create_detector"):
        pytest.skip("cdface.detect.create_detector (the real detectors) is not in this tree")
    return shared_dir / "data" / "photos"


def test_embed_detect_on_real_photos(photos, shared_dir, tmp_path, capsys):
    listed = ["group_six_faces.jpg", "no_face_mask_texture.jpg", "tom_hanks.png"]
    (tmp_path / "list.txt").write_text("".join(f"{photos / name}\n" for name in listed))
    out = tmp_path / "f.npy"
    model = shared_dir / "models" / "mobilefacenet-foamliu.onnx"
    assert main(["embed", str(tmp_path / "list.txt"), "--model", str(model), *IMAGENET, "--out", str(out),
                 "--detect", "--min-score", "0.95", "--workers", "0", "--no-progress"]) == 0
    names = (tmp_path / "f.paths.txt").read_text().splitlines()
    group = [n for n in names if n.startswith(f"{photos / 'group_six_faces.jpg'}#face")]
    assert len(group) == 6 and len(names) == 7  # the six people (not the chip or bucket below 0.95), Tom Hanks
    assert "no_face_mask_texture.jpg: no face found" in (tmp_path / "f.skipped.txt").read_text()
    faces = json.loads((tmp_path / "f.faces.json").read_text())["faces"]
    assert all(f["score"] >= 0.95 for f in faces) and np.load(out).shape[0] == 7


def test_compare_refuses_the_texture_and_search_finds_tom_hanks(photos, shared_dir, tmp_path, capsys):
    model = shared_dir / "models" / "mobilefacenet-foamliu.onnx"
    code = main(["compare", str(photos / "tom_hanks.png"), str(photos / "no_face_mask_texture.jpg"), "--model",
                 str(model), *IMAGENET, "--threshold", "0.0", "--detect"])
    captured = capsys.readouterr()
    assert code == 2 and "same person" not in captured.out and "no_face_mask_texture.jpg" in captured.err
    # a gallery of aligned crops (5 per identity, embedded as they are), a query photo (detected)
    crops = tmp_path / "crops"
    assert main(["data", "extract", str(shared_dir / "data" / "realfaces" / "train.rec"), "--out", str(crops),
                 "--per-class", "5"]) == 0
    gallery = tmp_path / "g.npy"
    assert main(["embed", str(crops), "--model", str(model), *IMAGENET, "--out", str(gallery), "--workers", "0",
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", "--gallery", str(gallery), "--query", str(photos / "tom_hanks.png"), "--model",
                 str(model), *IMAGENET, "--detect", "--k", "1", "--json", "--device", "cpu", "--workers", "0"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["query_path"].startswith(f"{photos / 'tom_hanks.png'}#face1 box=")
    label = int(Path(rows[0]["results"][0]["path"]).parent.name)  # data extract's <label>/<key>.jpg
    identities = json.loads((shared_dir / "data" / "realfaces" / "manifest.json").read_text())["identities"]
    assert identities[label] == "Tom Hanks"
