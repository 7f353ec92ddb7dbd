"""Answers a user can trust (issue 24, item 6): a threshold at a chosen FAR in compare/search, "unknown" answers
per probe and per identity, face quality (embedding norm) in embed/compare/search."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inference_helpers import random_faces, run_cdface, tiny_net
from PIL import Image

from cdface.cli import main
from cdface.errors import FormatError
from cdface.inference import FaceEmbedder
from cdface.inference.export import export_onnx
from cdface.inference.identify import gallery_identities, identity_scores


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("m") / "tiny.onnx"
    assert export_onnx(tiny_net(), path, dynamic_batch=True).ok
    return str(path)


def test_identity_scores_are_the_max_or_mean_cosine_over_each_identity_s_images():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(9, 6)).astype(np.float32)
    gallery[4] = np.nan  # a broken row of identity 1
    labels = np.array([0, 0, 1, 2, 1, 2, 2, 0, 1])
    queries = rng.normal(size=(3, 6)).astype(np.float32)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sim = np.nan_to_num(q @ g.T, nan=-np.inf)
    for reduce, fn in (("max", np.max), ("mean", np.mean)):
        got = identity_scores(queries, gallery, labels, 3, reduce, chunk_size=4, device="cpu")
        expected = np.stack([fn(sim[:, labels == i], axis=1) for i in range(3)], axis=1)
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.isneginf(identity_scores(queries, gallery, labels, 3, "mean", device="cpu")[:, 1]).all()


def test_gallery_identities_come_from_folders_or_a_labels_file(tmp_path):
    labels, ids = gallery_identities(["alice/1.jpg", "bob/1.jpg", "alice\\2.jpg", "/x/carol/3.png"])
    assert ids == ["alice", "bob", "carol"] and labels.tolist() == [0, 1, 0, 2]
    labels, ids = gallery_identities(None, ["x", "y ", "x"])
    assert ids == ["x", "y"] and labels.tolist() == [0, 1, 0]
    with pytest.raises(FormatError, match="identity folders"):
        gallery_identities(["a.jpg", "b.jpg"])


def _features(tmp_path):
    """A gallery of 2 identities x 2 images and 3 queries: near alice, near bob's first image, a stranger."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(3, 32))
    gallery = np.stack([base[0] + 0.3 * rng.normal(size=32), base[0] + 0.3 * rng.normal(size=32),
                        base[1] + 0.1 * rng.normal(size=32), -base[1]]).astype(np.float32)
    queries = np.stack([base[0], base[1], base[2]]).astype(np.float32)
    np.save(tmp_path / "g.npy", gallery)
    (tmp_path / "g.paths.txt").write_text("alice/1.jpg\nalice/2.jpg\nbob/1.jpg\nbob/2.jpg\n")
    np.save(tmp_path / "q.npy", queries)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return q @ g.T


def test_search_answers_unknown_below_the_threshold_per_probe_and_per_identity(tmp_path, capsys):
    sim = _features(tmp_path)
    best = sim.max(axis=1)
    assert best[2] < 0.5 < min(best[0], best[1])  # the stranger's best image score is low
    common = ["search", "--gallery", str(tmp_path / "g.npy"), "--query", str(tmp_path / "q.npy"), "--device", "cpu",
              "--json", "--k", "2"]
    assert main([*common, "--unknown-below", "0.5"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["answer"] for r in rows] == ["alice", "bob", "unknown"]
    assert rows[0]["results"][0]["identity"] == "alice" and rows[0]["results"][0]["path"].startswith("alice/")
    assert rows[2]["answer_score"] == pytest.approx(best[2], abs=1e-5)

    assert main([*common, "--unknown-below", "0.5", "--by", "identity", "--identity-score", "mean"]) == 0
    rows = json.loads(capsys.readouterr().out)
    mean_bob = sim[1, 2:].mean()  # bob's second image is the opposite of the query: the mean is low
    assert rows[1]["results"][[h["identity"] for h in rows[1]["results"]].index("bob")]["score"] == pytest.approx(
        mean_bob, abs=1e-5)
    assert mean_bob < 0.5 and rows[1]["answer"] == "unknown"  # one opposite image sinks the mean

    assert main([*common, "--unknown-below", "0.5", "--by", "identity"]) == 0  # max: bob is found again
    assert [r["answer"] for r in json.loads(capsys.readouterr().out)] == ["alice", "bob", "unknown"]


def test_search_threshold_options_are_checked_with_one_line(tmp_path, capsys):
    _features(tmp_path)
    (tmp_path / "labels.txt").write_text("a\nb\na\n")  # 3 lines for 4 gallery rows
    common = ["search", "--gallery", str(tmp_path / "g.npy"), "--query", str(tmp_path / "q.npy")]
    for extra, message in ((["--gallery-labels", str(tmp_path / "labels.txt")], "one name per row"),
                           (["--far", "1e-3"], "--far needs where to calibrate it"),
                           (["--calibrate", "x.bin", "--far", "0.1"], "embeds the pair set with --model"),
                           (["--unknown-below", "0.3", "--far", "0.1"], "not both"),
                           (["--min-quality", "3"], "q.quality.npy")):
        assert main([*common, *extra]) == 2
        assert message in capsys.readouterr().err


def test_far_threshold_from_eval_equals_calibration_on_the_same_set(tiny_onnx, tiny_face_set, tmp_path):
    pairs = str(tiny_face_set["bin"])
    proc = run_cdface("eval", "--model", tiny_onnx, "--targets", pairs, "--out", tmp_path / "ev", "--no-plots",
                      "--workers", "0", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    table = json.loads((tmp_path / "ev" / "results.json").read_text())["models"][0]["results"][pairs]
    table = table["far_thresholds"]
    impostors = table["impostor_pairs"]
    assert impostors == 20 and table["levels"]["0.01"] is None and table["levels"]["0.1"]["cosine"] is not None

    faces = random_faces(2, seed=5)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(faces[0]).save(a)
    Image.fromarray(faces[1]).save(b)
    got = []
    for source in (["--threshold-from", tmp_path / "ev" / "results.json"], ["--calibrate", pairs]):
        proc = run_cdface("compare", a, b, "--model", tiny_onnx, "--far", "0.1", *source, "--json")
        assert proc.returncode == 0, proc.stderr
        got.append(json.loads(proc.stdout))
    assert got[0]["threshold"] == got[1]["threshold"] == round(table["levels"]["0.1"]["cosine"], 6)
    for result in got:
        assert result["threshold_far"] == 0.1 and "20 impostor" in result["threshold_source"]
        assert result["same"] is (result["cosine"] >= result["threshold"])
    for source in (["--threshold-from", tmp_path / "ev" / "results.json"], ["--calibrate", pairs]):
        proc = run_cdface("compare", a, b, "--model", tiny_onnx, "--far", "0.01", *source)
        assert proc.returncode == 2 and "FAR 0.01 needs at least 100 impostor pairs" in proc.stderr
        assert "has 20" in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr


def test_embed_writes_quality_and_min_quality_drops_and_flags(tiny_onnx, tmp_path, capsys):
    faces = random_faces(4, seed=9)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, face in enumerate(faces):
        Image.fromarray(face).save(folder / f"{i}.png")
    common = ["--model", tiny_onnx, "--workers", "0", "--no-progress"]
    assert main(["embed", str(folder), "--out", str(tmp_path / "all.npy"), *common]) == 0
    names = (tmp_path / "all.paths.txt").read_text().splitlines()
    plain, _ = FaceEmbedder(tiny_onnx, device="cpu").embed_pair(np.stack([np.asarray(Image.open(n)) for n in names]))
    norms = np.linalg.norm(plain, axis=1)
    np.testing.assert_allclose(np.load(tmp_path / "all.quality.npy"), norms, rtol=1e-5)

    cut = float(np.sort(norms)[1] + np.sort(norms)[2]) / 2  # two faces below, two above
    assert main(["embed", str(folder), "--out", str(tmp_path / "good.npy"), "--min-quality", str(cut), *common]) == 0
    kept = (tmp_path / "good.paths.txt").read_text().splitlines()
    assert kept == [n for n, v in zip(names, norms) if v >= cut] and len(kept) == 2
    skipped = (tmp_path / "good.skipped.txt").read_text()
    assert skipped.count("low quality (embedding norm") == 2
    capsys.readouterr()

    assert main(["search", "--gallery", str(tmp_path / "all.npy"), "--query", str(tmp_path / "all.npy"),
                 "--device", "cpu", "--json", "--min-quality", str(cut), "--gallery-labels",
                 str(_labels(tmp_path, names))]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["answer"] == "low quality" for r in rows] == (norms < cut).tolist()
    assert [r["quality"] for r in rows] == pytest.approx(norms.tolist(), rel=1e-4)

    proc = run_cdface("compare", names[0], names[1], "--model", tiny_onnx, "--threshold", "0.1", "--min-quality",
                      str(cut), "--json")
    result = json.loads(proc.stdout)
    assert result["quality"][names[0]] == pytest.approx(norms[0], rel=1e-4)
    low = [n for n, v in zip(names[:2], norms[:2]) if v < cut]
    assert result["low_quality"] == low and (result["same"] is None) == bool(low)


def _labels(tmp_path, names):
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"id{i}\n" for i in range(len(names))))
    return path


def test_compare_far_options_are_checked_before_any_model_runs(tmp_path, capsys):
    for i, face in enumerate(random_faces(2, seed=3)):
        Image.fromarray(face).save(tmp_path / f"{i}.png")
    common = ["compare", str(tmp_path / "0.png"), str(tmp_path / "1.png"), "--model", str(tmp_path / "none.onnx")]
    for extra, message in ((["--threshold", "0.3", "--far", "0.1"], "not both"),
                           (["--calibrate", "p.bin"], "give --far F too"),
                           (["--far", "0.1"], "--far needs where to calibrate it")):
        assert main([*common, *extra]) == 2
        assert message in capsys.readouterr().err
