"""`cdface embed | search | export` through the real command-line entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inference_helpers import random_faces, tiny_net
from PIL import Image

from cdface.cli import main
from cdface.inference import FaceEmbedder
from cdface.inference.export import export_onnx
from cdface.inference.search import topk_search


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("m") / "tiny.onnx"
    assert export_onnx(tiny_net(), path, dynamic_batch=True).ok
    return str(path)


def test_embed_folder_skips_corrupt_files(tiny_onnx, tmp_path, capsys):
    folder = tmp_path / "faces"
    (folder / "sub").mkdir(parents=True)
    faces = random_faces(3)
    paths = [folder / "a.png", folder / "sub" / "b.png", folder / "c.png"]
    for face, path in zip(faces, paths):
        Image.fromarray(face).save(path)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    out = tmp_path / "feats.npy"
    assert main(["embed", str(folder), "--model", tiny_onnx, "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    feats = np.load(out)
    listed = (tmp_path / "feats.paths.txt").read_text().splitlines()
    skipped = (tmp_path / "feats.skipped.txt").read_text()
    assert feats.shape == (3, 16) and "broken.jpg" in skipped and "broken.jpg" in capsys.readouterr().err
    assert sorted(listed) == sorted(str(p) for p in paths)
    expected = FaceEmbedder(tiny_onnx, device="cpu").embed([p for p in listed])
    np.testing.assert_allclose(feats, expected, atol=1e-5)


def test_embed_list_with_landmarks(tiny_onnx, tmp_path):
    from cdface.data.align import ARCFACE_TEMPLATE

    face = random_faces(1)[0]
    canvas = np.zeros((160, 170, 3), np.uint8)
    canvas[20:132, 30:142] = face
    Image.fromarray(canvas).save(tmp_path / "loose.png")
    Image.fromarray(face).save(tmp_path / "aligned.png")
    (tmp_path / "list.txt").write_text("loose.png\n")
    coords = " ".join(f"{v:.6f}" for v in (ARCFACE_TEMPLATE + [30.0, 20.0]).reshape(-1))
    (tmp_path / "lmk.txt").write_text(f"loose.png {coords}\n")
    out = tmp_path / "f.npy"
    assert (
        main(
            [
                "embed",
                str(tmp_path / "list.txt"),
                "--model",
                tiny_onnx,
                "--out",
                str(out),
                "--landmarks",
                str(tmp_path / "lmk.txt"),
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    expected = FaceEmbedder(tiny_onnx, device="cpu").embed([tmp_path / "aligned.png"])
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)


def test_search_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    gallery, query = rng.normal(size=(50, 8)), rng.normal(size=(3, 8))
    np.save(tmp_path / "g.npy", gallery.astype(np.float32))
    np.save(tmp_path / "q.npy", query.astype(np.float32))
    argv = ["search", "--gallery", str(tmp_path / "g.npy"), "--query", str(tmp_path / "q.npy"), "--k", "4"]
    assert main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    _, indices = topk_search(query.astype(np.float32), gallery.astype(np.float32), k=4)
    assert [[hit["index"] for hit in r["results"]] for r in rows] == indices.tolist()
    np.save(tmp_path / "bad.npy", np.zeros((3, 5), np.float32))
    assert main(["search", "--gallery", str(tmp_path / "g.npy"), "--query", str(tmp_path / "bad.npy")]) == 2


def test_export_cli_refuses_onnx_input(tiny_onnx, tmp_path, capsys):
    assert main(["export", "--model", tiny_onnx, "--out", str(tmp_path / "again.onnx")]) == 2
    assert "only PyTorch models" in capsys.readouterr().err
