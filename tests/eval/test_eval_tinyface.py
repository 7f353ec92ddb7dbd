"""TinyFace end to end on a mock of QMUL's layout (.mat lists written with scipy.io.savemat, ~20x16 crops)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from inference_helpers import MeanColor, tiny_net
from inference_mock_data import write_tinyface

from cdface.cli import main
from cdface.errors import FormatError
from cdface.eval import evaluate_model
from cdface.eval.identification import identification
from cdface.eval.tinyface import read_tinyface_layout

scipy_io = pytest.importorskip("scipy.io")


def test_layout_reader(tmp_path):
    root = write_tinyface(tmp_path)
    layout = read_tinyface_layout(root)
    assert [p.name for p in layout.probe_paths] == ["1_1.jpg", "1_2.jpg", "2_1.jpg", "2_2.jpg", "3_1.jpg",
                                                    "3_2.jpg", "4_1.jpg", "4_2.jpg"]
    assert layout.probe_labels.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert layout.gallery_labels.tolist() == [1, 2, 3, 4] + [-100] * 6
    assert layout.num_distractors == 6 and not layout.aligned and layout.mat_id_mismatches == 0
    # the data root may also be the tinyface folder's parent's parent-less form: <root>/tinyface
    assert read_tinyface_layout(root / "tinyface").probe_labels.tolist() == layout.probe_labels.tolist()


def test_layout_errors_name_the_file(tmp_path):
    root = write_tinyface(tmp_path)
    (root / "tinyface" / "Testing_Set" / "Probe" / "3_2.jpg").unlink()
    with pytest.raises(FormatError, match=r"probe_img_ID_pairs.mat.*probe_set entry 6"):
        read_tinyface_layout(root)
    scipy_io.savemat(root / "tinyface" / "Testing_Set" / "probe_img_ID_pairs.mat", {"other": np.zeros(2)})
    with pytest.raises(FormatError, match="probe_set"):
        read_tinyface_layout(root)
    (root / "tinyface" / "Testing_Set" / "probe_img_ID_pairs.mat").write_bytes(b"not a mat file")
    with pytest.raises(FormatError, match="MATLAB"):
        read_tinyface_layout(root)
    with pytest.raises(FormatError, match="Testing_Set"):
        read_tinyface_layout(tmp_path / "nowhere")


def test_eval_tinyface_known_answer(tmp_path):
    root = write_tinyface(tmp_path / "data")
    # the MeanColor oracle through the Python API: every probe's colour matches its mate's
    res = evaluate_model(MeanColor(), "tinyface", root, batch_size=3)["tinyface"]
    assert res.metrics["cmc"] == {"1": 1.0, "5": 1.0, "20": 1.0}
    assert res.metrics["num_mated_probes"] == 8 and res.metrics["num_distractors"] == 6
    assert res.provenance["protocol"]["resized_from_original_crops"] is True


def test_tinyface_features_match_a_direct_computation(tmp_path, monkeypatch):
    """The evaluator resizes the 20x16 crops to 112x112, embeds them with their mirror, sums, normalises,
    and scores probes against match + distractors: the same numbers as doing each step by hand."""
    from cdface.data.align import fit_to_size
    from cdface.data.decode import decode_image

    root = write_tinyface(tmp_path / "data", seed=3)
    layout = read_tinyface_layout(root)
    model = tiny_net(embedding_size=8)
    paths = layout.probe_paths + layout.gallery_paths
    crops = np.stack([fit_to_size(decode_image(p.read_bytes()), (112, 112)) for p in paths])
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        feats = (model(x).double() + model(x.flip(3)).double()).numpy()
    feats = (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)
    expected = identification(feats[:8], layout.probe_labels, feats[8:], layout.gallery_labels, ranks=(1, 5, 20))
    got = evaluate_model(model, "tinyface", root, batch_size=4)["tinyface"].metrics
    assert got["cmc"] == {str(k): v for k, v in expected.cmc.items()}
    assert got["hits"] == {str(k): v for k, v in expected.hits.items()}


def test_eval_cli_writes_outputs(tmp_path, capsys):
    from cdface.inference.export import export_onnx

    root = write_tinyface(tmp_path / "data", aligned=True, size=(112, 112))
    onnx = tmp_path / "colour.onnx"
    assert export_onnx(MeanColor().eval(), onnx, dynamic_batch=True).ok
    out = tmp_path / "out"
    rc = main(["eval", "--model", str(onnx), "--targets", "tinyface", "--data-root", str(root), "--out", str(out),
               "--json", "--workers", "0", "--batch-size", "5", "--no-progress"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["tinyface"]["rank1"] == 1.0
    document = json.loads((out / "results.json").read_text())
    assert document["models"][0]["provenance"]["tinyface"]["protocol"]["aligned_release"] is True
    table = (out / "results.md").read_text()
    assert "tinyface rank-1" in table and "tinyface rank-20" in table
    assert (out / "cmc_tinyface.png").stat().st_size > 1000


def test_layout_reader_skips_mac_metadata_among_the_distractors(tmp_path):
    root = write_tinyface(tmp_path)
    distractors = root / "tinyface" / "Testing_Set" / "Gallery_Distractor"
    (distractors / "._1.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # a copy made on a Mac
    (distractors / "__MACOSX").mkdir()
    (distractors / "__MACOSX" / "._2.jpg").write_bytes(b"\x00\x05\x16\x07")
    layout = read_tinyface_layout(root)
    assert layout.num_distractors == 6  # not 8 undecodable "distractors"
