"""`cdface eval` outputs and warnings: pair-set ROC and score histograms, ± std in results.md, TAR@FAR lists,
non-finite embeddings, inputs of the wrong size, and an ONNX model without its preprocessing card."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from inference_helpers import MeanColor, run_cdface, tiny_net
from inference_mock_data import write_pairs_bin

from cdface.cli import main
from cdface.eval import evaluate_model
from cdface.eval.roc import roc_curve
from cdface.eval.verification import evaluate_pairs, pair_distances
from cdface.inference.export import export_onnx
from cdface.inference.input_check import InputSizeError, check_input_sizes


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    colour = root / "colour.onnx"
    assert export_onnx(MeanColor().eval(), colour, dynamic_batch=True).ok
    tiny = root / "tiny.onnx"
    assert export_onnx(tiny_net(), tiny, dynamic_batch=True).ok
    return {"colour": colour, "tiny": tiny, "root": root}


@pytest.fixture(scope="module")
def lfw(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "lfw.bin"
    write_pairs_bin(path, num_pairs=40, seed=2)
    return path


def test_pair_set_plots_std_and_far_list_as_a_user(models, lfw, tmp_path):
    out = tmp_path / "out"
    proc = run_cdface("eval", "--model", models["colour"], "--model", models["tiny"], "--targets", lfw,
                      "--out", out, "--far", "0.1,0.05", "--workers", "0", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    document = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text()
    for entry in document["models"]:
        metrics = entry["results"][str(lfw)]
        assert set(metrics["tar_at_far"]) == {"0.1", "0.05"} and metrics["valid"] is True
        row = next(line for line in table.splitlines() if line.startswith(f"| {entry['model'].split('/')[-1]} |"))
        # results.md keeps results.json's std, in percent
        assert f"{100 * metrics['accuracy']:.2f} ± {100 * metrics['accuracy_std']:.2f}" in row
    assert "lfw TAR@1e-1" in table and "lfw TAR@0.05" in table
    assert (out / "roc_lfw.png").stat().st_size > 1000
    for name in ("colour", "tiny"):  # one histogram per model when several are compared
        assert (out / f"scores_lfw_{name}.png").stat().st_size > 1000


def test_pair_curves_are_the_roc_and_scores_of_all_pairs(models, lfw):
    result = evaluate_model(str(models["tiny"]), [str(lfw)], device="cpu")[str(lfw)]
    scores = result.curves["scores"]
    issame = np.array([i < 20 for i in range(40)])
    assert len(scores["genuine"]) == 20 and len(scores["impostor"]) == 20
    # the threshold drawn is insightface's mean best squared distance, as a cosine
    assert scores["threshold"] == pytest.approx(1.0 - result.metrics["threshold"] / 2.0)
    cos = np.empty(40)
    cos[issame], cos[~issame] = scores["genuine"], scores["impostor"]
    fpr, tpr, _ = roc_curve(issame, cos)
    assert result.curves["roc"]["fpr"] == fpr.tolist() and result.curves["roc"]["tpr"] == tpr.tolist()


def test_nonfinite_backbone_is_invalid_and_exits_nonzero(lfw, tmp_path):
    from cdface.models import create_model

    model = create_model("iresnet_tiny", embedding_size=8)
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    torch.save(model.state_dict(), tmp_path / "nan.pt")
    argv = ["eval", "--model", str(tmp_path / "nan.pt"), "--arch", "iresnet_tiny", "--targets", str(lfw),
            "--out", str(tmp_path / "out"), "--workers", "0", "--no-progress"]
    proc = run_cdface(*argv)
    assert proc.returncode == 3, proc.stderr
    assert "80 of 80 embeddings are non-finite" in proc.stderr and "Traceback" not in proc.stderr
    metrics = json.loads((tmp_path / "out" / "results.json").read_text())["models"][0]["results"][str(lfw)]
    assert metrics["valid"] is False and metrics["nonfinite_embeddings"] == 80
    assert "(invalid)" in (tmp_path / "out" / "results.md").read_text()
    assert main([*argv, "--allow-nonfinite"]) == 0


def test_score_pairs_nonfinite_rows(tmp_path, capsys):
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(40, 8))
    emb[[3, 17, 18]] = np.nan
    np.save(tmp_path / "e.npy", emb)
    np.save(tmp_path / "s.npy", rng.random(20) < 0.5)
    argv = ["score", "pairs", "--embeddings", str(tmp_path / "e.npy"), "--issame", str(tmp_path / "s.npy")]
    assert main(argv) == 3
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["valid"] is False and out["nonfinite_embeddings"] == 3 and "3 of 40" in captured.err
    assert main([*argv, "--allow-nonfinite"]) == 0


def test_training_verification_reports_nonfinite(caplog):
    from cdface.train.verification import PairImages, verify_pair_set

    model = tiny_net()
    with torch.no_grad():
        model.body[-2].weight.fill_(float("inf"))
    images = np.random.default_rng(0).integers(0, 256, size=(20, 112, 112, 3), dtype=np.uint8)
    pairs = PairImages(images=images, issame=np.arange(10) < 5)
    with caplog.at_level("WARNING", logger="cdface.train"):
        result = verify_pair_set(model, pairs, torch.device("cpu"), batch_size=8)
    assert not result.valid and np.isnan(result.accuracy) and np.isnan(result.val)
    assert "non-finite" in caplog.text and "of 40 embeddings" in caplog.text


def test_wrong_input_size_warns_once_and_strict_refuses(models, lfw, tmp_path, caplog):
    big = MeanColor().eval()
    big.input_cfg = {"input_size": (128, 128), "mean": (0.5,) * 3, "std": (0.5,) * 3, "color": "RGB"}
    path = tmp_path / "m128.onnx"
    assert export_onnx(big, path, dynamic_batch=True).ok
    with caplog.at_level("WARNING", logger="cdface.inference"):
        result = evaluate_model(str(path), [str(lfw)], device="cpu")[str(lfw)]
    warnings = [r for r in caplog.records if "input size" in r.getMessage()]
    assert len(warnings) == 1 and "80 of 80 images" in warnings[0].getMessage()
    assert "80 at 112x112" in warnings[0].getMessage()
    assert result.provenance["input_sizes"] == {"model_input_size": [128, 128], "image_sizes": {"112x112": 80},
                                                "resized": 80, "oversized": 0}
    proc = run_cdface("eval", "--model", path, "--targets", lfw, "--strict", "--workers", "0", "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "do not match the model's input size 128x128" in proc.stderr.strip().splitlines()[-1]


def test_input_size_summary_counts_oversized_photos():
    counts = {(112, 112): 5, (250, 250): 2, (12000, 12000): 1}
    summary = check_input_sizes(counts, (112, 112), "photos")
    assert summary["resized"] == 3 and summary["oversized"] == 1
    with pytest.raises(InputSizeError, match=r"3 of 8 images .* 1 are over 4x larger.*--landmarks"):
        check_input_sizes(counts, (112, 112), "photos", strict=True)
    assert check_input_sizes({(112, 112): 4}, (112, 112), "ok", strict=True)["resized"] == 0


def test_onnx_without_card_says_what_it_assumed(models, lfw, tmp_path):
    bare = tmp_path / "bare.onnx"
    shutil.copy(models["tiny"], bare)  # the .onnx alone: no tiny.json beside it
    out = tmp_path / "out"
    proc = run_cdface("eval", "--model", bare, "--targets", lfw, "--out", out, "--workers", "0", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "assumed mean 0.5,0.5,0.5, std 0.5,0.5,0.5, colour RGB" in proc.stderr
    assert "--input-mean C1,C2,C3 --input-std C1,C2,C3 --bgr" in proc.stderr
    info = json.loads((out / "results.json").read_text())["models"][0]["model_info"]["preprocessing"]
    assert info["assumed"] == ["mean", "std", "color"] and "no model card" in info["note"]
    document = evaluate_model(str(bare), [str(lfw)], device="cpu", input_mean=(0.5,) * 3, input_std=(0.5,) * 3,
                              bgr=False)
    assert document[str(lfw)].metrics["accuracy"] == evaluate_model(str(models["tiny"]), [str(lfw)],
                                                                    device="cpu")[str(lfw)].metrics["accuracy"]


def test_far_list_reaches_every_pair_result(models, lfw, tmp_path):
    from cdface.data.pairs_bin import load_bin, write_bin
    from cdface.inference import FaceEmbedder
    from cdface.inference.extract import EncodedImages, extract_features

    sorted_set = load_bin(lfw)  # genuine pairs first: interleave them so every fold has both kinds
    order = np.ravel(np.column_stack([np.arange(20), np.arange(20, 40)]))
    images = [sorted_set.images[2 * i + j] for i in order for j in (0, 1)]
    mixed = write_bin(tmp_path / "mixed.bin", images, sorted_set.issame[order].tolist())
    metrics = evaluate_model(str(models["tiny"]), [str(mixed)], device="cpu", far_levels=(0.1, 0.2))[str(mixed)]
    metrics = metrics.metrics
    assert set(metrics["tar_at_far"]) == {"0.1", "0.2"}
    pair_set = load_bin(mixed)
    feats = extract_features(FaceEmbedder(str(models["tiny"]), device="cpu"), EncodedImages(pair_set.images, "x"))
    for far in (0.1, 0.2):  # each level is insightface's `val` rule at that FAR
        ref = evaluate_pairs(feats.fused(), pair_set.issame, far_target=far)
        assert metrics["tar_at_far"][repr(far)] == ref.val and metrics["tar_at_far_std"][repr(far)] == ref.val_std


def test_pair_distances_cosine_identity():
    # the histogram's cosine is 1 - d²/2 of insightface's distance on unit rows
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(10, 6))
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = np.sum(unit[0::2] * unit[1::2], axis=1)
    np.testing.assert_allclose(1.0 - pair_distances(emb) / 2.0, cos, atol=1e-12)
    assert evaluate_pairs(emb, np.ones(5, bool), nfolds=5).valid


def test_card_input_size_disagreeing_with_the_graph_is_warned(models, tmp_path, caplog):
    from cdface.inference import load_embedding_model

    shutil.copy(models["tiny"], tmp_path / "m.onnx")
    card = json.loads((models["root"] / "tiny.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**card, "input_size": [128, 128]}))
    with caplog.at_level("WARNING", logger="cdface.inference"):
        model = load_embedding_model(tmp_path / "m.onnx", device="cpu")
    assert model.input_cfg["input_size"] == (112, 112)
    assert "declares input size 128x128 but the graph takes 112x112" in caplog.text
    assert model.describe()["preprocessing"]["assumed"] == []


def test_python_embedder_warns_on_wrong_size_too(caplog):
    from cdface.inference import FaceEmbedder

    embedder = FaceEmbedder(tiny_net(), device="cpu")
    images = np.random.default_rng(0).integers(0, 256, size=(3, 150, 150, 3), dtype=np.uint8)
    with caplog.at_level("WARNING", logger="cdface.inference"):
        embedder.embed(images)
        embedder.embed(images[:, :112, :112])
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "3 of 3 images" in messages[0] and "3 at 150x150" in messages[0]
    assert "FaceEmbedder.align" in messages[0]


def test_same_named_pair_sets_and_models_get_distinct_columns_rows_and_plots(tmp_path):
    """Two `lfw.bin` in different folders, two `tiny.onnx` in different runs: nothing is merged or overwritten."""
    from cdface.eval.report import distinct_labels, write_outputs
    from cdface.eval.results import TargetResult

    assert distinct_labels(["/d/a/lfw.bin", "/d/b/lfw.bin", "/d/cfp.bin", "lfw"]) == {
        "/d/a/lfw.bin": "a/lfw", "/d/b/lfw.bin": "b/lfw", "/d/cfp.bin": "cfp", "lfw": "lfw"}
    two_runs = {"/x/run/m.onnx": "x/run/m", "/y/run/m.onnx": "y/run/m"}
    assert distinct_labels(list(two_runs)) == two_runs

    def result(target, acc):
        scores = {"genuine": [0.9], "impostor": [0.1], "threshold": 0.5, "threshold_distance": 1.0}
        roc = {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}
        return TargetResult(target, "pairs", {"accuracy": acc, "accuracy_std": 0.0},
                            curves={"scores": scores, "roc": roc})

    targets = [str(tmp_path / "a" / "lfw.bin"), str(tmp_path / "b" / "lfw.bin")]
    models = [str(tmp_path / "r1" / "tiny.onnx"), str(tmp_path / "r2" / "tiny.onnx")]
    per_model = [(m, {t: result(t, acc) for t, acc in zip(targets, (0.5 + k / 10, 0.6 + k / 10))})
                 for k, m in enumerate(models)]
    written = write_outputs(tmp_path / "out", {"models": []}, per_model)
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| model | a/lfw acc | b/lfw acc |" in table
    assert "| r1/tiny.onnx | 50.00 ± 0.00 | 60.00 ± 0.00 |" in table
    assert "| r2/tiny.onnx | 60.00 ± 0.00 | 70.00 ± 0.00 |" in table
    names = sorted(p.name for p in written if p.suffix == ".png")
    assert names == ["roc_a_lfw.png", "roc_b_lfw.png", "scores_a_lfw_r1_tiny.png", "scores_a_lfw_r2_tiny.png",
                     "scores_b_lfw_r1_tiny.png", "scores_b_lfw_r2_tiny.png"]


def test_no_plots_writes_and_says_no_plots(models, lfw, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", "--model", str(models["colour"]), "--targets", str(lfw), "--out", str(out), "--workers", "0",
            "--no-progress", "--no-plots"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md"]
    err = capsys.readouterr().err
    assert err.rstrip().endswith("results.md") and "and plots" not in err
