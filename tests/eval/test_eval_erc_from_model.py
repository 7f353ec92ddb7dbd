"""`cdface eval --quality`: error-versus-reject on a pair set and on IJB 1:1, end to end on mock layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from inference_helpers import tiny_net
from inference_mock_data import write_ijb, write_pairs_bin

from cdface.cli import main
from cdface.eval import evaluate_model
from cdface.eval.erc import error_versus_reject


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("erc")
    write_pairs_bin(root / "lfw.bin", num_pairs=40)
    write_ijb(root / "IJBC", "IJBC")
    return root


def test_pair_set_erc_equals_direct_computation(data_root):
    from cdface.data.decode import decode_image
    from cdface.data.pairs_bin import load_bin

    model = tiny_net(embedding_size=8)
    pairs = load_bin(data_root / "lfw.bin")
    x = torch.from_numpy(np.stack([decode_image(b) for b in pairs.images])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        plain = model(x).double().numpy()
        fused = plain + model(x.flip(3)).double().numpy()
    index = np.arange(80).reshape(-1, 2)
    # norm: MagFace's protocol (gen_feat.py keeps the plain image's feature): quality and distances from the plain
    # images; it was read from the flip-fused embeddings, so the ERC-AUC could not be set beside published curves
    magface = error_versus_reject(plain, index, pairs.issame, np.linalg.norm(plain, axis=1))
    flip_fused = error_versus_reject(fused, index, pairs.issame, np.linalg.norm(fused, axis=1))
    for spec, expected, label in [("norm", magface, "feature norm, plain image (MagFace)"),
                                  ("norm-fused", flip_fused, "feature norm, flip-fused")]:
        got = evaluate_model(model, "lfw", data_root, quality=spec, batch_size=16)["lfw"]
        erc = got.metrics["erc"]
        assert erc["quality"] == label and erc["threshold_mode"] == "fixed"
        np.testing.assert_allclose(erc["fnmr"]["0.001"], expected.fnmr[1e-3], rtol=0, atol=1e-12)
        assert erc["auc"]["0.001"] == pytest.approx(expected.auc[1e-3], abs=1e-12)
        np.testing.assert_allclose(erc["quality_range"], expected.quality_range, rtol=1e-6)
        assert got.metrics["accuracy"] > 0  # the verification metrics are still there
    assert magface.quality_range != flip_fused.quality_range  # the two specs measure different features


def test_eval_cli_quality_outputs_and_errors(data_root, tmp_path, capsys):
    from cdface.models import create_model

    model = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(create_model("iresnet_tiny", embedding_size=16).state_dict(), model)
    quality = tmp_path / "q.npy"
    np.save(quality, np.linspace(0, 1, 16))  # IJB mock: 16 images
    out = tmp_path / "out"
    common = ["--model", str(model), "--arch", "iresnet_tiny", "--data-root", str(data_root), "--no-progress",
              "--workers", "0", "--batch-size", "8"]
    rc = main(["eval", *common, "--targets", "ijbc", "--quality", str(quality), "--out", str(out), "--json",
               "--ijb-protocols", "11"])
    assert rc == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    erc = printed["ijbc"]["erc"]
    assert erc["num_pairs"] == 28 and erc["num_genuine"] == 4 and erc["quality"] == str(quality)
    assert len(erc["fnmr"]["0.001"]) == 20 and erc["reject"][1] == 0.05
    assert "ijbc ERC-AUC@1e-3" in (out / "results.md").read_text()
    assert (out / "erc_ijbc.png").stat().st_size > 1000
    # a pair set has no detector score; a quality file of the wrong length names the file
    assert main(["eval", *common, "--targets", "lfw", "--quality", "faceness"]) == 2  # a user error: exit 2
    assert "no detector scores" in capsys.readouterr().err
    assert main(["eval", *common, "--targets", "lfw", "--quality", str(quality)]) == 2
    err = capsys.readouterr().err
    assert "q.npy" in err and "80 finite qualities" in err


def test_score_erc_ijb_from_saved_features(data_root, tmp_path, capsys):
    from cdface.eval.erc import ijb_error_versus_reject
    from cdface.eval.ijb_meta import load_ijb_meta

    meta_dir = data_root / "IJBC" / "meta"
    meta = load_ijb_meta(meta_dir, dataset="IJBC", with_pairs=True)
    feats = np.random.default_rng(2).normal(size=(16, 8)).astype(np.float32)
    np.save(tmp_path / "f.npy", feats)
    rc = main(["score", "erc", "--features", str(tmp_path / "f.npy"), "--ijb-meta", str(meta_dir), "--quality",
               "faceness", "--reject", "0,0.25,0.5"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    expected = ijb_error_versus_reject(feats, meta.faceness, meta.templates, meta.medias, meta.pairs, meta.labels,
                                       meta.faceness, reject_fractions=(0, 0.25, 0.5))
    assert out["fnmr"]["0.001"] == [None if np.isnan(v) else float(v) for v in expected.fnmr[1e-3]]
    assert out["quality"] == "detector faceness" and out["num_pairs"] == 28
    assert main(["score", "erc", "--features", str(tmp_path / "f.npy"), "--quality", "faceness",
                 "--issame", str(tmp_path / "f.npy")]) == 2
    assert "needs --ijb-meta" in capsys.readouterr().err
