"""`cdface eval` end to end on mock pair / IJB / MegaFace directories, and on the shared real model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from inference_helpers import SHARED, MeanColor, tiny_net
from inference_mock_data import write_ijb, write_megaface, write_pairs_bin

from cdface.cli import main
from cdface.eval import evaluate_model, verify_pairs
from cdface.inference.export import export_onnx


@pytest.fixture(scope="module")
def colour_onnx(tmp_path_factory) -> str:
    """The MeanColor oracle as a dynamic-batch ONNX file: the CLI loads it like any third-party model."""
    path = tmp_path_factory.mktemp("model") / "colour.onnx"
    assert export_onnx(MeanColor().eval(), path, dynamic_batch=True).ok
    return str(path)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    write_pairs_bin(root / "lfw.bin")
    write_ijb(root / "IJBC", "IJBC")
    write_megaface(root / "megaface")
    return root


def test_eval_cli_all_protocols(colour_onnx, data_root, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "--model",
            colour_onnx,
            "--targets",
            "lfw,ijbc,megaface",
            "--data-root",
            str(data_root),
            "--out",
            str(out),
            "--json",
            "--workers",
            "2",
            "--batch-size",
            "5",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"lfw", "ijbc", "megaface"}
    # the oracle separates identities perfectly once faces are aligned with their landmarks
    assert printed["lfw"]["accuracy"] == 1.0 and printed["lfw"]["num_pairs"] == 20
    ver = printed["ijbc"]["verification"]
    assert ver["num_pairs"] == 28 and ver["num_templates"] == 8
    assert ver["tar_at_far"]["0.1"] == 1.0 and ver["tar_at_far"]["0.0001"] == 1.0
    assert printed["ijbc"]["identification"]["rank1"] == 1.0
    assert printed["megaface"]["rank1"] == 1.0
    assert printed["megaface"]["tar_at_far"]["1e-06"] == 1.0

    document = json.loads((out / "results.json").read_text())
    entry = document["models"][0]
    assert entry["sha256"] and entry["results"] == printed
    assert document["cdface_version"] and document["protocol_options"]["flip"] is True
    prov = entry["provenance"]
    assert set(prov["lfw"]["files"]) == {str(data_root / "lfw.bin")}
    assert prov["ijbc"]["num_images"] == 16 and "ijbc_name_5pts_score.txt" in prov["ijbc"]["files"]
    assert prov["megaface"]["protocol"]["noisy_probes_replaced"] == 1
    assert prov["megaface"]["protocol"]["noisy_distractors_masked"] == 1
    table = (out / "results.md").read_text()
    assert "| colour.onnx |" in table and "lfw acc" in table and "100.00" in table
    for plot in ("roc_ijbc.png", "cmc_megaface.png", "distractors_megaface.png"):
        assert (out / plot).stat().st_size > 1000


def test_ijb_features_match_a_direct_computation(data_root, monkeypatch):
    """The features the evaluator scores equal features computed by hand (align, embed, flip, sum)."""
    import cdface.eval.ijb as ijb
    from cdface.data.align import align_face
    from cdface.data.decode import decode_image
    from cdface.eval.ijb_meta import load_ijb_meta

    model = tiny_net(embedding_size=8)
    meta = load_ijb_meta(data_root / "IJBC" / "meta", "IJBC")
    crops = np.stack(
        [
            align_face(decode_image((data_root / "IJBC" / "loose_crop" / n).read_bytes()), lmk, template="ijb")
            for n, lmk in zip(meta.names, meta.landmarks)
        ]
    )
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        expected = (model(x) + model(x.flip(3))).numpy()

    seen = {}
    original = ijb.ijb_verification

    def spy(features, faceness, *args, **kwargs):
        seen["features"], seen["faceness"] = features, faceness
        return original(features, faceness, *args, **kwargs)

    monkeypatch.setattr(ijb, "ijb_verification", spy)
    evaluate_model(model, "ijbc", data_root, ijb_protocols=("11",), batch_size=3)
    np.testing.assert_allclose(seen["features"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(seen["faceness"], meta.faceness)


def test_python_api_on_a_live_module(data_root):
    model = MeanColor()
    model.train()
    result = verify_pairs(model, data_root / "lfw.bin", batch_size=7)
    assert result.accuracy == 1.0 and model.training
    no_flip = evaluate_model(model, [str(data_root / "lfw.bin")], flip=False)
    assert no_flip[str(data_root / "lfw.bin")].metrics["accuracy"] == 1.0


def test_unknown_target_and_missing_data(colour_onnx, tmp_path, capsys):
    assert main(["eval", "--model", colour_onnx, "--targets", "nonsense", "--no-progress"]) == 2
    assert "unknown target" in capsys.readouterr().err
    rc = main(["eval", "--model", colour_onnx, "--targets", "lfw", "--data-root", str(tmp_path), "--no-progress"])
    assert rc == 2
    assert "lfw.bin" in capsys.readouterr().err


@pytest.mark.slow
def test_real_model_reproduces_insightface_reference(capsys):
    """The third-party MobileFaceNet on real faces: 0.96667 +- 0.01491 under insightface's own code."""
    model = SHARED / "models" / "mobilefacenet-foamliu.onnx"
    pairs = SHARED / "data" / "realfaces" / "pairs.bin"
    if not (model.is_file() and pairs.is_file()):
        pytest.skip("../shared (real model and pairs.bin) is not available")
    reference = json.loads((SHARED / "data" / "realfaces" / "reference_mobilefacenet.json").read_text())
    rc = main(
        [
            "eval",
            "--model",
            str(model),
            "--targets",
            str(pairs),
            "--input-mean",
            "0.485,0.456,0.406",
            "--input-std",
            "0.229,0.224,0.225",
            "--json",
            "--no-progress",
            "--workers",
            "1",
        ]
    )
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)[str(pairs)]
    assert metrics["num_pairs"] == reference["pairs"]
    assert metrics["accuracy"] == pytest.approx(reference["accuracy"], abs=5e-6)
    assert metrics["accuracy_std"] == pytest.approx(reference["accuracy_std"], abs=5e-6)


@pytest.mark.slow
def test_real_model_without_card_says_which_preprocessing_it_assumed(tmp_path, caplog):
    """The same model with no card and no flags: scored with the assumed [-1, 1] RGB input, and said so."""
    model = SHARED / "models" / "mobilefacenet-foamliu.onnx"
    pairs = SHARED / "data" / "realfaces" / "pairs.bin"
    if not (model.is_file() and pairs.is_file()):
        pytest.skip("../shared (real model and pairs.bin) is not available")
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="cdface.inference"):
        rc = main(["eval", "--model", str(model), "--targets", str(pairs), "--out", str(out), "--no-plots",
                   "--no-progress", "--workers", "1"])
    assert rc == 0
    assert "assumed mean 0.5,0.5,0.5, std 0.5,0.5,0.5, colour RGB" in caplog.text and "--input-mean" in caplog.text
    entry = json.loads((out / "results.json").read_text())["models"][0]
    assert entry["model_info"]["preprocessing"]["assumed"] == ["mean", "std", "color"]
    # the wrong normalisation costs accuracy: 0.96333 here against the model's 0.96667 with its real statistics
    assert entry["results"][str(pairs)]["accuracy"] == pytest.approx(0.96333, abs=5e-6)


def test_far_list_reaches_ijb_and_megaface(colour_onnx, data_root):
    results = evaluate_model(colour_onnx, "ijbc,megaface", data_root, far_levels=(0.5, 0.1), ijb_protocols=("11",))
    assert set(results["ijbc"].metrics["verification"]["tar_at_far"]) == {"0.5", "0.1"}
    assert set(results["megaface"].metrics["tar_at_far"]) == {"0.5", "0.1"}
    assert results["ijbc"].metrics["valid"] is True and results["megaface"].metrics["nonfinite_embeddings"] == 0
    default = evaluate_model(colour_onnx, "megaface", data_root)["megaface"].metrics
    assert set(default["tar_at_far"]) == {"0.0001", "1e-05", "1e-06", "1e-07", "1e-08", "1e-09"}
