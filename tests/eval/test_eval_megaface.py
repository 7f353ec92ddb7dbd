"""MegaFace: OpenCV matrix files, devkit-rule ranks/TARs against brute force, the paper repo's variant."""

from __future__ import annotations

import argparse
import json
import struct

import numpy as np
import pytest
import torch

from cdface.errors import FormatError
from cdface.eval.cli import register
from cdface.eval.megaface import megaface_evaluate, megaface_identification, megaface_verification
from cdface.eval.megaface_io import (
    read_feature_files,
    read_feature_list_json,
    read_noise_list,
    read_opencv_matrix,
    write_opencv_matrix,
)


def _norm(x):
    return torch.nn.functional.normalize(torch.from_numpy(np.asarray(x, np.float32)), dim=1)


def _data(rng, n_id=12, per=5, n_d=3000, dim=16, noise=0.9):
    centres = rng.normal(size=(n_id, dim))
    labels = np.repeat(np.arange(n_id), per)
    probe = (centres[labels] + noise * rng.normal(size=(labels.size, dim))).astype(np.float32)
    dis = rng.normal(size=(n_d, dim)).astype(np.float32)
    return probe, labels, dis


def test_opencv_matrix_round_trip_and_insightface_layout(tmp_path):
    v = np.arange(6, dtype=np.float32) / 7
    path = tmp_path / "a.bin"
    # the layout insightface's gen_megaface.py writes: 4 ints (D, 1, 4, 5) then D floats
    path.write_bytes(struct.pack("4i", 6, 1, 4, 5) + struct.pack("6f", *v))
    np.testing.assert_array_equal(read_opencv_matrix(path)[:, 0], v)
    write_opencv_matrix(tmp_path / "b.bin", v)
    assert (tmp_path / "b.bin").read_bytes() == path.read_bytes()
    m = np.arange(12, dtype=np.float64).reshape(3, 4)
    write_opencv_matrix(tmp_path / "c.bin", m)
    np.testing.assert_array_equal(read_opencv_matrix(tmp_path / "c.bin"), m)
    np.testing.assert_array_equal(read_feature_files([path, tmp_path / "b.bin"]), np.stack([v, v]))


@pytest.mark.parametrize(
    "blob,where",
    [(b"\x01\x00", "header"), (struct.pack("4i", 2, 1, 4, 9) + b"\0" * 8, "header"),
     (struct.pack("4i", 2, 1, 8, 5) + b"\0" * 8, "header"), (struct.pack("4i", 3, 1, 4, 5) + b"\0" * 8, "data")],
)
def test_bad_opencv_files(tmp_path, blob, where):
    p = tmp_path / "x.bin"
    p.write_bytes(blob)
    with pytest.raises(FormatError) as info:
        read_opencv_matrix(p)
    assert info.value.where == where and info.value.path == str(p)


def test_lists(tmp_path):
    (tmp_path / "n.txt").write_text("# comment\nA/a.jpg\n\nB/b.png\n")
    assert read_noise_list(tmp_path / "n.txt") == {"A/a.jpg", "B/b.png"}
    (tmp_path / "l.json").write_text(json.dumps({"path": ["a", "b"], "id": ["x", "y"]}))
    assert read_feature_list_json(tmp_path / "l.json") == (["a", "b"], ["x", "y"])
    (tmp_path / "bad.json").write_text('{"path": [1, 2]}')
    with pytest.raises(FormatError):
        read_feature_list_json(tmp_path / "bad.json")


def test_toy_ranks_are_obvious():
    # identity 0: probes along e0 and e0 (+ tiny); distractors: one at 0.5 along e0 -> never beats the mate
    probe = np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0], [0.2, 1, 0]], np.float32)
    labels = np.array([0, 0, 1, 1])
    dis = np.array([[0.5, 0, 1], [0.4, 0.6, 0.1], [0.3, 1, 0]], np.float32)
    res = megaface_identification(probe, labels, dis, ranks=(1, 2, 3), chunk=2)
    # identity 1: p=[0,1,0] mate [0.2,1,0] (cos .981) vs distractor [0.3,1,0] (cos .958): rank 1;
    # p=[.2,1,0] mate [0,1,0] (cos .981) vs [.3,1,0] (cos .998) -> rank 2; identity 0: rank 1 both ways
    assert res.cmc == {1: 0.75, 2: 1.0, 3: 1.0}


def _brute_force(probe, labels, dis, fars):
    p, d = _norm(probe), _norm(dis)
    intra = (p @ p.T).numpy()
    sd = (p @ d.T).numpy()
    ranks = []
    for i in range(len(labels)):
        for j in range(len(labels)):
            if i != j and labels[i] == labels[j]:
                ranks.append(1 + int(np.sum(sd[i] >= intra[i, j])))
    ranks = np.array(ranks)
    gen = np.array([intra[i, j] for i in range(len(labels)) for j in range(i + 1, len(labels))
                    if labels[i] == labels[j]])
    imp = np.sort(sd.ravel())[::-1]
    tars = {}
    for f in fars:
        k = max(1, int(np.floor(f * imp.size)))
        tars[f] = float(np.mean(gen > imp[k - 1]))
    return {k: float(np.mean(ranks <= k)) for k in range(1, 11)}, tars


def test_a_distractor_tied_with_the_mate_outranks_it():
    # identity 0: two identical images; a distractor equal to them ties with the mate -> rank 2, not 1
    probe = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.1]], np.float32)
    labels = np.array([0, 0, 1, 1])
    dis = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    res = megaface_identification(probe, labels, dis, ranks=(1, 2), chunk=1)
    assert res.cmc == {1: 0.5, 2: 1.0}  # identity 1's two ordered pairs are right, identity 0's two are rank 2


def test_masked_distractors_count_as_impostors_that_never_win():
    # Equivalent explicit form: extra distractors orthogonal to every probe (score 0, below every real score).
    rng = np.random.default_rng(4)
    probe = np.abs(rng.normal(size=(12, 6))).astype(np.float32) + 0.5
    labels = np.repeat(np.arange(4), 3)
    dis = np.abs(rng.normal(size=(300, 6))).astype(np.float32)
    fars = (1e-1, 1e-2, 1e-3)
    masked = megaface_evaluate(probe, labels, dis, far_levels=fars, masked_distractors=40, chunk=64)
    pad = lambda x, v: np.concatenate([x, np.full((x.shape[0], 1), v, np.float32)], axis=1)  # noqa: E731
    noisy = np.zeros((40, 7), np.float32)
    noisy[:, -1] = 1.0
    explicit = megaface_evaluate(pad(probe, 0.0), labels, np.concatenate([pad(dis, 0.0), noisy]),
                                 far_levels=fars, chunk=64)
    assert masked[0].cmc == explicit[0].cmc
    assert masked[1].tar_at_far == explicit[1].tar_at_far
    assert masked[1].num_impostor == explicit[1].num_impostor == 12 * 340


def test_devkit_rules_match_brute_force():
    rng = np.random.default_rng(0)
    probe, labels, dis = _data(rng)
    dis[7] = dis[3]  # duplicated distractors -> tied impostor scores
    fars = (1e-2, 1e-3, 1e-4, 1e-6)
    ident, verif = megaface_evaluate(probe, labels, dis, far_levels=fars, chunk=700)
    cmc, tars = _brute_force(probe, labels, dis, fars)
    assert ident.cmc == pytest.approx(cmc, abs=0)
    assert verif.tar_at_far == pytest.approx(tars, abs=0)
    # the same with the standalone functions and another chunking
    assert megaface_identification(probe, labels, dis, chunk=4096).cmc == ident.cmc
    assert megaface_verification(probe, labels, dis, far_levels=fars, chunk=333).tar_at_far == verif.tar_at_far


def test_size_curve_uses_nested_seeded_subsets():
    rng = np.random.default_rng(1)
    probe, labels, dis = _data(rng, n_d=2000, noise=1.4)
    res = megaface_identification(probe, labels, dis, distractor_sizes=(10, 100, 1000), seed=3, chunk=256)
    order = np.random.default_rng(3).permutation(dis.shape[0])
    for size in (10, 100, 1000):
        cmc, _ = _brute_force(probe, labels, dis[order[:size]], ())
        assert res.size_curve[size] == cmc[1]
    assert res.size_curve[2000] == res.rank1
    assert list(res.size_curve.values()) == sorted(res.size_curve.values(), reverse=True)


def _paper_reference(probe, labels, dis):
    """CPU transcription of the paper repository's compute_rank_1 / compute_roc."""
    pfeat, dfeat = _norm(probe), _norm(dis)
    tp = total = 0
    for ident in np.unique(labels):
        rows = np.flatnonzero(labels == ident)
        pp = pfeat[rows]
        inter = torch.nn.functional.linear(pp, dfeat).max(axis=1)[0].tolist()
        intra = torch.nn.functional.linear(pp, pp).numpy()
        total += (len(rows) - 1) * len(rows)
        for i in range(len(rows)):
            tp += np.sum(intra[i] > inter[i]) - 1
    acc = tp / (total * 1.0)
    g = torch.cat([pfeat, dfeat])
    gl = torch.from_numpy(np.r_[labels, -np.ones(len(dis), int)]).view(-1, 1)
    pl = torch.from_numpy(labels).view(-1, 1)
    pos_bins, neg_bins = torch.zeros(10000), torch.zeros(10000)
    for i in range(0, pfeat.shape[0], 10):
        pg = torch.nn.functional.linear(pfeat[i:i + 10], g)
        lab = pl[i:i + 10] == gl.T
        pos_bins += torch.histc(pg[lab], 10000, -1.0, 1.0 + 1e-5)
        neg_bins += torch.histc(pg[~lab], 10000, -1.0, 1.0 + 1e-5)
    pos_bins[-1] -= pfeat.shape[0]
    far = (torch.flip(torch.cumsum(torch.flip(neg_bins, [0]), 0), [0]) / torch.sum(neg_bins).item()).numpy()
    vr = (torch.flip(torch.cumsum(torch.flip(pos_bins, [0]), 0), [0]) / torch.sum(pos_bins).item()).numpy()
    return acc, far, vr


def test_seed_protocol_matches_paper_code():
    from cdface.eval.megaface import _find_score

    rng = np.random.default_rng(2)
    probe, labels, dis = _data(rng, n_id=7, per=4, n_d=1500, noise=1.1)
    ident, verif = megaface_evaluate(probe, labels, dis, protocol="seed", far_levels=(1e-2, 1e-3), chunk=400)
    acc, far, vr = _paper_reference(probe, labels, dis)
    assert ident.rank1 == acc
    for f in (1e-2, 1e-3):
        assert verif.tar_at_far[f] == pytest.approx(_find_score(far, vr, f), rel=1e-6)


def test_cli_megaface(tmp_path, capsys):
    rng = np.random.default_rng(4)
    probe, labels, dis = _data(rng, n_id=4, per=3, n_d=200)
    np.save(tmp_path / "p.npy", probe)
    np.save(tmp_path / "l.npy", labels)
    write_opencv_matrix(tmp_path / "d.bin", dis)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    argv = ["score", "megaface", "--probe", str(tmp_path / "p.npy"), "--probe-labels", str(tmp_path / "l.npy"),
            "--distractors", str(tmp_path / "d.bin"), "--sizes", "10,100"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    first = capsys.readouterr().out
    out = json.loads(first)
    assert set(out["cmc"]) == {str(k) for k in range(1, 11)}
    assert set(out["tar_at_far"]) == {"0.0001", "1e-05", "1e-06", "1e-07", "1e-08", "1e-09"}
    assert set(out["size_curve"]) == {"10", "100", "200"}
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert capsys.readouterr().out == first  # bit-identical JSON across runs


def test_merge_top_row_shortcut_same_values():
    """The running impostor top-K read from per-row top scores equals a full scan (ties included)."""
    from cdface.eval.megaface import _merge_top

    rng = np.random.default_rng(6)
    full = torch.empty(0)
    fast = torch.empty(0)
    seen = []
    for _ in range(6):
        s = torch.from_numpy(np.round(rng.normal(size=(30, 200)), 1).astype(np.float32))  # many ties
        seen.append(s.reshape(-1))
        row_top = torch.topk(s, 16, dim=1).values
        full = _merge_top(full, s, 250)
        fast = _merge_top(fast, s, 250, row_top)
        expect = torch.sort(torch.cat(seen), descending=True).values[:250]
        assert torch.equal(full, expect) and torch.equal(fast, expect)


def test_default_far_levels_are_1e4_to_1e9_and_cli_takes_a_list(tmp_path, capsys):
    from cdface.cli import main
    from cdface.eval.megaface import DEFAULT_MEGAFACE_FARS

    rng = np.random.default_rng(5)
    probe, labels, dis = _data(rng, n_id=4, per=3, n_d=3000)
    _, verif = megaface_evaluate(probe, labels, dis, chunk=1000)
    assert tuple(verif.tar_at_far) == DEFAULT_MEGAFACE_FARS == (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9)
    assert verif.tar_at_far == pytest.approx(_brute_force(probe, labels, dis, DEFAULT_MEGAFACE_FARS)[1], abs=0)
    for name, array in (("p", probe), ("l", labels), ("d", dis)):
        np.save(tmp_path / f"{name}.npy", array)
    argv = ["score", "megaface", "--probe", str(tmp_path / "p.npy"), "--probe-labels", str(tmp_path / "l.npy"),
            "--distractors", str(tmp_path / "d.npy"), "--far", "1e-2,1e-3"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tar_at_far"] == pytest.approx(
        {repr(k): v for k, v in _brute_force(probe, labels, dis, (1e-2, 1e-3))[1].items()}, abs=0)
    assert out["valid"] is True and out["nonfinite_embeddings"] == 0
