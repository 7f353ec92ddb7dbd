"""The deployment commands as a user runs them (`python -m cdface ...` in a fresh process): embed from any
source, compare with a threshold from an evaluation, search with names, data extract, help and aliases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inference_helpers import random_faces, run_cdface, tiny_net
from PIL import Image

from cdface.cli import build_parser, main
from cdface.data.decode import decode_image, encode_jpeg
from cdface.data.recordio import RecordIOReader
from cdface.data.recordio_writer import write_insightface_rec
from cdface.inference import FaceEmbedder
from cdface.inference.export import export_onnx


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("m") / "tiny.onnx"
    assert export_onnx(tiny_net(), path, dynamic_batch=True).ok
    return str(path)


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    for i, face in enumerate(random_faces(4, seed=7)):
        Image.fromarray(face).save(root / f"p{i}.png")
    return root


@pytest.fixture(scope="module")
def small_rec(tmp_path_factory):
    """An insightface-layout .rec: 3 classes x 2 JPEG images, labels [2, 0, 1, 0, 2, 1] before grouping."""
    root = tmp_path_factory.mktemp("rec")
    faces = random_faces(6, seed=11)
    labels = np.array([2, 0, 1, 0, 2, 1])
    blobs = [encode_jpeg(f) for f in faces]
    paths = write_insightface_rec(root, labels, blobs)
    return paths["rec"]


def test_embed_one_image_as_a_user(tiny_onnx, faces_dir, tmp_path):
    image = faces_dir / "p0.png"
    out = tmp_path / "one.npy"
    proc = run_cdface("embed", image, "--model", tiny_onnx, "--out", out, "--workers", "0", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    expected = FaceEmbedder(tiny_onnx, device="cpu").embed([image])
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)
    assert (tmp_path / "one.paths.txt").read_text().splitlines() == [str(image)]


def test_embed_a_rec_names_rows_by_record(tiny_onnx, small_rec, tmp_path):
    out = tmp_path / "rec.npy"
    proc = run_cdface("embed", small_rec, "--model", tiny_onnx, "--out", out, "--workers", "0", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    reader = RecordIOReader(small_rec)
    keys = reader.layout().image_keys
    assert (tmp_path / "rec.paths.txt").read_text().splitlines() == [f"{small_rec}#{k}" for k in keys]
    images = np.stack([decode_image(reader.read(int(k))[1]) for k in keys])
    np.testing.assert_allclose(np.load(out), FaceEmbedder(tiny_onnx, device="cpu").embed(images), atol=1e-5)


def test_embed_folder_and_list_agree(tiny_onnx, faces_dir, tmp_path):
    (tmp_path / "list.txt").write_text("".join(f"{faces_dir / f'p{i}.png'}\n" for i in range(4)))
    common = ["--model", tiny_onnx, "--workers", "0", "--no-progress"]
    assert main(["embed", str(faces_dir), "--out", str(tmp_path / "a.npy"), *common]) == 0
    assert main(["embed", str(tmp_path / "list.txt"), "--out", str(tmp_path / "b.npy"), *common]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_embed_rerun_without_unreadable_images_removes_the_old_skipped_list(tiny_onnx, faces_dir, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"")
    (tmp_path / "list.txt").write_text(f"{faces_dir / 'p0.png'}\n{tmp_path / 'broken.jpg'}\n")
    common = ["--model", tiny_onnx, "--workers", "0", "--no-progress", "--out", str(tmp_path / "f.npy")]
    assert main(["embed", str(tmp_path / "list.txt"), *common]) == 0
    assert "broken.jpg" in (tmp_path / "f.skipped.txt").read_text()
    assert main(["embed", str(faces_dir / "p0.png"), *common]) == 0
    assert not (tmp_path / "f.skipped.txt").exists()


def test_embed_reads_labelled_training_lists_too(faces_dir):
    """A training list (`<path> <label>`, im2rec's `idx<TAB>label<TAB>path`) names images: embed reads them,
    instead of taking each whole line as a path and skipping every image as missing."""
    from cdface.data.image_sources import resolve_image_source

    expected = [faces_dir / f"p{i}.png" for i in range(2)]
    (faces_dir / "plain.lst").write_text("p0.png 0\np1.png 1\n")
    (faces_dir / "im2rec.lst").write_text("0\t0.000000\tp0.png\n1\t1.000000\tp1.png\n")
    (faces_dir / "paths.txt").write_text("p0.png\np1.png\n")
    for name in ("plain.lst", "im2rec.lst", "paths.txt"):
        assert list(resolve_image_source(faces_dir / name).paths) == expected, name
    for name in ("plain.lst", "im2rec.lst", "paths.txt"):
        (faces_dir / name).unlink()


def test_compare_with_threshold_from_an_evaluation(tiny_onnx, faces_dir, tmp_path):
    # results.json as `cdface eval --out` writes it: insightface's threshold is a squared distance
    results = {"models": [{"model": tiny_onnx, "results": {"lfw": {"accuracy": 0.99, "threshold": 1.3}}}]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    a, b = faces_dir / "p0.png", faces_dir / "p1.png"
    proc = run_cdface("compare", a, b, "--model", tiny_onnx, "--threshold-from", tmp_path / "results.json", "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    emb = FaceEmbedder(tiny_onnx, device="cpu").embed([a, b])
    cosine = float(emb[0] @ emb[1])
    assert got["cosine"] == pytest.approx(cosine, abs=1e-5)
    assert got["threshold"] == pytest.approx(1.0 - 1.3 / 2.0)  # d² = 2 - 2 cos on unit vectors
    assert got["threshold_squared_distance"] == 1.3
    assert got["same"] is (cosine > 0.35) and "cos = 1 - d²/2" in got["threshold_source"]
    same = run_cdface("compare", a, a, "--model", tiny_onnx, "--threshold", "0.5")
    assert same.returncode == 0 and "same person" in same.stdout and "1.0000" in same.stdout


def test_search_prints_paths_and_scores(tiny_onnx, faces_dir, tmp_path):
    feats = tmp_path / "g.npy"
    assert main(["embed", str(faces_dir), "--model", tiny_onnx, "--out", str(feats), "--workers", "0",
                 "--no-progress"]) == 0
    names = (tmp_path / "g.paths.txt").read_text().splitlines()
    proc = run_cdface("search", "--gallery", feats, "--query", feats, "--k", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    for name in names:  # each query's best match is itself, printed by path with cosine 1
        assert f"  1. 1.0000  {name}" in proc.stdout
    as_json = run_cdface("search", "--gallery", feats, "--query", feats, "--k", "2", "--device", "cpu", "--json")
    rows = json.loads(as_json.stdout)
    gallery = np.load(feats)
    for q, row in enumerate(rows):
        assert row["query_path"] == names[q] and row["results"][0]["path"] == names[q]
        second = row["results"][1]
        assert second["score"] == pytest.approx(float(gallery[q] @ gallery[second["index"]]), abs=1e-5)
        assert second["path"] == names[second["index"]]


def test_data_extract_writes_an_image_folder(small_rec, tmp_path):
    out = tmp_path / "folder"
    proc = run_cdface("data", "extract", small_rec, "--out", out, "--classes", "0,2", "--per-class", "1")
    assert proc.returncode == 0, proc.stderr
    reader = RecordIOReader(small_rec)
    keys = reader.layout().image_keys
    headers = {int(k): reader.read(int(k)) for k in keys}
    written = sorted(out.rglob("*.jpg"))
    assert [p.parent.name for p in written] == ["0", "2"]
    for path in written:  # the record's bytes, unchanged, in the folder of its label
        header, payload = headers[int(path.stem)]
        assert path.read_bytes() == payload and int(header.label) == int(path.parent.name)
    first_of_class = {}
    for k in sorted(headers):
        first_of_class.setdefault(int(headers[k][0].label), k)
    assert {int(p.stem) for p in written} == {first_of_class[0], first_of_class[2]}
    full = tmp_path / "all"
    assert main(["data", "extract", str(small_rec), "--out", str(full), "--limit", "5"]) == 0
    assert len(list(full.rglob("*.jpg"))) == 5


def test_data_extract_rewrites_a_different_file_of_the_same_size_and_names_missing_classes(small_rec, tmp_path,
                                                                                           capsys):
    out = tmp_path / "folder"
    assert main(["data", "extract", str(small_rec), "--out", str(out), "--classes", "0", "--per-class", "1"]) == 0
    written = next(out.rglob("*.jpg"))
    original = written.read_bytes()
    written.write_bytes(bytes(len(original)))  # same size, other bytes (another .rec's image under this key)
    capsys.readouterr()
    assert main(["data", "extract", str(small_rec), "--out", str(out), "--classes", "0,999", "--per-class", "1"]) == 0
    assert written.read_bytes() == original
    err = capsys.readouterr().err
    assert "1 requested class(es) are not in" in err and "999" in err and "already there" not in err


def test_data_extract_real_rec_round_trips_through_image_folder(shared_dir, tmp_path):
    from cdface.data.datasets import ImageFolderDataset

    rec = shared_dir / "data" / "realfaces" / "train.rec"
    assert main(["data", "extract", str(rec), "--out", str(tmp_path), "--classes", "3,11", "--per-class", "4"]) == 0
    dataset = ImageFolderDataset(tmp_path)
    assert dataset.num_classes == 2 and len(dataset) == 8 and [p.parent.name for p in dataset.paths][::4] == ["03",
                                                                                                              "11"]


def test_help_shows_defaults_and_no_developer_text():
    top = run_cdface("--help")
    assert top.returncode == 0
    assert "this file only wires" not in top.stdout and "Each area registers" not in top.stdout
    assert "compare" in top.stdout and "examples:" in top.stdout
    export = run_cdface("export", "--help").stdout
    assert "(default: 17)" in export and "ONNX opset" in export
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for command in ("export", "search", "embed", "compare", "eval"):
        for action in sub.choices[command]._actions:
            assert action.help, f"cdface {command} {action.option_strings} has no help text"


def test_models_lists_aliases():
    proc = run_cdface("models")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[2:]}
    assert rows["iresnet50"].rstrip().endswith("r50") and rows["mobilefacenet"].rstrip().endswith("mbf")
    from cdface.models.registry import model_aliases, resolve_model_name

    for name, aliases in model_aliases().items():  # every alias listed resolves to its row's model
        assert all(resolve_model_name(a) == name for a in aliases) and ", ".join(aliases) in rows[name]
