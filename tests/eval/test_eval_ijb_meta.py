"""IJB meta readers: good layouts load in 5pts order; malformed lines raise FormatError naming file+line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cdface.errors import FormatError
from cdface.eval.cli import register
from cdface.eval.ijb_meta import (
    load_ijb_1n_meta,
    load_ijb_meta,
    read_name_5pts_score,
    read_template_pair_list,
)

PTS = "{} 10 20 30 20 20 30 12 40 28 40 0.9\n"


def _write_meta(d, names=("a.jpg", "b.jpg", "c.jpg", "d.jpg"), pairs="1 2 1\n1 3 0\n2 3 0\n"):
    d.mkdir(parents=True, exist_ok=True)
    (d / "ijbc_face_tid_mid.txt").write_text("a.jpg 1 10\nb.jpg 1 10\nc.jpg 2 20\nd.jpg 3 30\n")
    (d / "ijbc_name_5pts_score.txt").write_text("".join(PTS.format(n) for n in names))
    (d / "ijbc_template_pair_label.txt").write_text(pairs)
    head = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n"
    (d / "ijbc_1N_gallery_G1.csv").write_text(head + "1,7,img/a.jpg\n1,7,img/b.jpg\n")
    (d / "ijbc_1N_gallery_G2.csv").write_text(head + "3,8,img/d.jpg\n")
    (d / "ijbc_1N_probe_mixed.csv").write_text(head + "2,7,img/c.jpg\n")
    return d


def test_load_good_meta(tmp_path):
    d = _write_meta(tmp_path / "meta")
    meta = load_ijb_meta(d, "IJBC")
    np.testing.assert_array_equal(meta.templates, [1, 1, 2, 3])
    np.testing.assert_array_equal(meta.medias, [10, 10, 20, 30])
    assert meta.landmarks.shape == (4, 5, 2) and meta.landmarks[0, 1, 0] == 30
    np.testing.assert_allclose(meta.faceness, 0.9)
    np.testing.assert_array_equal(meta.pairs, [[1, 2], [1, 3], [2, 3]])
    np.testing.assert_array_equal(meta.labels, [1, 0, 0])
    lists = load_ijb_1n_meta(d, "IJBC", known_templates=meta.templates)
    np.testing.assert_array_equal(lists.galleries[0][1], [7, 7])
    np.testing.assert_array_equal(lists.probes[0], [2])


def test_5pts_order_differs_from_tid_mid(tmp_path):
    d = _write_meta(tmp_path / "meta", names=("d.jpg", "c.jpg", "b.jpg", "a.jpg"))
    meta = load_ijb_meta(d, "IJBC")
    np.testing.assert_array_equal(meta.templates, [3, 2, 1, 1])


@pytest.mark.parametrize(
    "pairs,line",
    [("1 2 1\n1 9 0\n", "line 2"), ("1 2 1\n1 2\n", "line 2"), ("1 x 1\n", "line 1"),
     ("1 2 1\n\n2 3 5\n", "line 3")],
)
def test_bad_pair_lists(tmp_path, pairs, line):
    d = _write_meta(tmp_path / "meta", pairs=pairs)
    with pytest.raises(FormatError) as info:
        load_ijb_meta(d, "IJBC")
    assert "ijbc_template_pair_label.txt" in str(info.value) and info.value.where == line


@pytest.mark.parametrize(
    "row",
    ["e.jpg 1 2 3 4 5 6 7 8 9 nan 0.9", "e.jpg 1 2 3 4 5 6 7 8 9 0.9", "e.jpg 1 2 3 4 5 6 7 8 9 1e9 0.9",
     "e.jpg 1 2 3 4 5 6 7 8 9 x 0.9"],
)
def test_bad_5pts_lines(tmp_path, row):
    p = tmp_path / "ijbc_name_5pts_score.txt"
    p.write_text(PTS.format("a.jpg") + row + "\n")
    with pytest.raises(FormatError) as info:
        read_name_5pts_score(p)
    assert info.value.where == "line 2" and info.value.path == str(p)


def test_bad_tid_mid_and_csv(tmp_path):
    d = _write_meta(tmp_path / "meta")
    (d / "ijbc_face_tid_mid.txt").write_text("a.jpg 1 10\nb.jpg 1\n")
    with pytest.raises(FormatError, match="line 2"):
        load_ijb_meta(d, "IJBC")
    d = _write_meta(tmp_path / "meta2")
    (d / "ijbc_1N_probe_mixed.csv").write_text("TEMPLATE_ID,SUBJECT_ID\n2,seven\n")
    with pytest.raises(FormatError, match="line 2"):
        load_ijb_1n_meta(d, "IJBC")
    with pytest.raises(FormatError, match="not found"):
        read_template_pair_list(tmp_path / "missing.txt")


def _cli(argv):
    import argparse

    parser = argparse.ArgumentParser(prog="cdface")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_ijb_json(tmp_path, capsys):
    d = _write_meta(tmp_path / "meta")
    feats = np.array([[1, 0], [1, 0.2], [0.9, 0.1], [0, 1]], dtype=np.float32)
    np.save(tmp_path / "f.npy", feats)
    assert _cli(["score", "ijb", "--features", str(tmp_path / "f.npy"), "--meta-dir", str(d),
                 "--dataset", "IJBC", "--out", str(tmp_path / "o.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["tar_at_far"]) == {"1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1"}
    assert json.loads((tmp_path / "o.json").read_text()) == out
    assert _cli(["score", "ijb", "--features", str(tmp_path / "f.npy"), "--meta-dir", str(d),
                 "--protocol", "1n"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rank1"] == 1.0 and set(out["tpir_at_fpir"]) == {"0.01", "0.1"}


def test_cli_ijb_far_list_and_nonfinite_features(tmp_path, capsys):
    from cdface.eval.ijb import ijb_verification
    from cdface.eval.ijb_meta import load_ijb_meta

    d = _write_meta(tmp_path / "meta")
    feats = np.array([[1, 0], [1, 0.2], [0.9, 0.1], [0, 1]], dtype=np.float32)
    np.save(tmp_path / "f.npy", feats)
    argv = ["score", "ijb", "--features", str(tmp_path / "f.npy"), "--meta-dir", str(d), "--far", "0.5,0.25"]
    assert _cli(argv) == 0
    out = json.loads(capsys.readouterr().out)
    meta = load_ijb_meta(d, dataset="IJBC")
    ref = ijb_verification(feats, meta.faceness, meta.templates, meta.medias, meta.pairs, meta.labels,
                           far_levels=(0.5, 0.25))
    assert out["tar_at_far"] == {"0.5": ref.tar_at_far[0.5], "0.25": ref.tar_at_far[0.25]}
    feats[1] = np.nan
    np.save(tmp_path / "f.npy", feats)
    assert _cli(argv) == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out)["nonfinite_embeddings"] == 1 and "1 of 4 embeddings" in captured.err
