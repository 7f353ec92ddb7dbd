"""1:N identification (TinyFace's protocol): known answers, and agreement with a slow loop that follows
AdaFace's ``DIR_FAR`` / PFE's ``find_thresholds_by_FAR`` definitions on the full score matrix."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from cdface.eval.cli import register
from cdface.eval.identification import identification
from cdface.eval.ranking import mated_ranks


def _unit(x):
    return torch.nn.functional.normalize(torch.from_numpy(np.asarray(x, np.float32)), dim=1).numpy()


def _adaface_dir_far(probe, lp, gallery, lg, ranks, fars=None):
    """Slow reference: AdaFace's definitions, one probe at a time, on the whole float32 score matrix."""
    score = probe @ gallery.T  # inner product of normalised features (float32)
    label = (lp[:, None] == lg[None, :]) & (lg[None, :] >= 0)
    mated = [i for i in range(len(lp)) if label[i].any()]
    nonmated = [i for i in range(len(lp)) if not label[i].any()]
    if fars is None:
        thresholds = [np.float32(score.min() - 1e-10)]
        openset = False
    else:
        neg = sorted((float(score[i].max()) for i in nonmated), reverse=True)
        thresholds = []
        for far in fars:
            k = int(np.round(len(neg) * far))
            thresholds.append(np.float32(neg[0] + 1e-5) if k == 0 else np.float32(neg[k - 1]))
        openset = True
    out = np.zeros((len(thresholds), len(ranks)), np.float32)
    fpir = []
    for t, th in enumerate(thresholds):
        for r, rank in enumerate(ranks):
            ok = []
            for i in mated:
                order = np.argsort(score[i])[::-1]
                retrieved = label[i][order][:rank].any()
                gt = score[i][label[i]].max()
                ok.append(retrieved and (not openset or gt >= th))
            out[t, r] = np.asarray(ok, np.float32).mean()
        if nonmated:
            fpir.append(np.mean([score[i].max() >= th for i in nonmated]))
    return out, thresholds, fpir


def test_known_answer_small():
    # 2-D unit features at angles; gallery: id 0 at 0 deg, id 1 at 90 deg, a distractor at 10 deg
    ang = np.deg2rad
    g = np.stack([[np.cos(a), np.sin(a)] for a in (ang(0), ang(90), ang(10))]).astype(np.float32)
    lg = np.array([0, 1, -100])
    # probe A (id 0) at 8 deg: distractor (2 deg away) beats the mate (8 deg) -> rank 2
    # probe B (id 1) at 80 deg: mate first -> rank 1; probe C (id 7) has no mate
    p = np.stack([[np.cos(a), np.sin(a)] for a in (ang(8), ang(80), ang(45))]).astype(np.float32)
    lp = np.array([0, 1, 7])
    res = identification(p, lp, g, lg, ranks=(1, 2, 3))
    assert res.cmc == {1: 0.5, 2: 1.0, 3: 1.0}
    assert res.hits == {1: 1, 2: 2, 3: 2}
    assert (res.num_mated, res.num_nonmated, res.num_gallery, res.num_distractors) == (2, 1, 3, 1)
    # open set: the one non-mated probe tops at cos(35 deg) (id 1's 90 deg is 45 away, distractor 35);
    # FPIR 0 -> threshold above it: probe A's mate scores cos 8 deg > cos 35 deg passes, B too
    res = identification(p, lp, g, lg, ranks=(1,), fpir_levels=(0.0, 1.0))
    assert res.thresholds[0.0] == pytest.approx(np.cos(ang(35)) + 1e-5, abs=1e-6)
    assert res.dir_at_fpir[0.0] == {1: 0.5}
    assert res.fpir_obtained[0.0] == 0.0 and res.fpir_obtained[1.0] == 1.0


def test_negative_labels_never_mate_and_errors():
    g = _unit(np.eye(3))
    with pytest.raises(ValueError, match="no probe has a mate"):
        identification(g[:1], np.array([-100]), g, np.array([-100, -100, -100]))
    with pytest.raises(ValueError, match="without a mate"):
        identification(g[:1], np.array([0]), g, np.array([0, 1, 2]), fpir_levels=(0.1,))
    with pytest.raises(ValueError, match="gallery labels"):
        identification(g, np.array([0, 1, 2]), g, np.array([0, 1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_adaface_definition(seed):
    rng = np.random.default_rng(seed)
    n_id, dim = 40, 8
    centres = rng.normal(size=(n_id, dim))
    g_lab = np.r_[np.arange(n_id), rng.integers(0, n_id, 15)]  # some identities with two gallery images
    gallery = centres[g_lab] + 0.8 * rng.normal(size=(g_lab.size, dim))
    distractors = rng.normal(size=(300, dim))
    gallery = np.r_[gallery, distractors]
    lg = np.r_[g_lab, np.full(300, -100)]
    p_lab = np.r_[rng.integers(0, n_id, 60), np.arange(1000, 1025)]  # 25 probes without a mate
    probe = np.r_[centres[p_lab[:60]], rng.normal(size=(25, dim))] + 0.8 * rng.normal(size=(85, dim))
    # exact ties at the top: a distractor that duplicates a probe's mate
    gallery[-1] = gallery[np.flatnonzero(lg == p_lab[0])[0]]
    probe, gallery = _unit(probe), _unit(gallery)
    ranks = (1, 5, 20)
    fars = (0.0, 0.04, 0.1, 0.5, 1.0)
    ref_closed, _, _ = _adaface_dir_far(probe, p_lab, gallery, lg, ranks)
    ref_open, ref_th, ref_fpir = _adaface_dir_far(probe, p_lab, gallery, lg, ranks, fars)
    for chunk in (7, 64, 100000):  # streamed over gallery chunks or in one block: same numbers
        res = identification(probe, p_lab, gallery, lg, ranks=ranks, fpir_levels=fars, chunk=chunk)
        assert [np.float32(res.cmc[r]) for r in ranks] == list(ref_closed[0])
        for t, far in enumerate(fars):
            # one block: np.dot's own bits; in chunks BLAS may round a score's last bit differently
            assert res.thresholds[far] == pytest.approx(float(ref_th[t]), abs=0 if chunk > 1000 else 1.2e-7)
            assert [np.float32(res.dir_at_fpir[far][r]) for r in ranks] == list(ref_open[t])
            assert res.fpir_obtained[far] == pytest.approx(ref_fpir[t], abs=1e-12)
    assert res.cmc_curve.shape == (20,) and res.cmc_curve[0] == res.cmc[1] and res.cmc_curve[-1] == res.cmc[20]


def test_tie_rules():
    # the mate and two distractors have the same feature: the three tie at the top
    g = _unit([[1, 0], [1, 0], [1, 0], [0, 1]])
    lg = np.array([-1, 0, -1, 1])
    p = _unit([[1, 0.1]])
    lp = np.array([0])
    assert mated_ranks(p, lp, g, lg, 4, "pessimistic").rank[0] == 3
    assert mated_ranks(p, lp, g, lg, 4, "optimistic").rank[0] == 1
    order = np.argsort((p @ g.T)[0])[::-1]
    expected = int(np.flatnonzero(lg[order] == 0)[0]) + 1
    assert mated_ranks(p, lp, g, lg, 4, "argsort_reversed").rank[0] == expected


def test_cli_identification(tmp_path, capsys):
    rng = np.random.default_rng(5)
    g = rng.normal(size=(50, 6)).astype(np.float32)
    lg = np.r_[np.arange(20), np.full(30, -1)]
    p = g[:20] + 0.3 * rng.normal(size=(20, 6)).astype(np.float32)
    p = np.r_[p, rng.normal(size=(5, 6)).astype(np.float32)]
    lp = np.r_[np.arange(20), np.arange(100, 105)]
    for name, arr in (("p", p), ("lp", lp), ("g", g), ("lg", lg)):
        np.save(tmp_path / f"{name}.npy", arr)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    argv = ["score", "identification", "--probe", str(tmp_path / "p.npy"), "--probe-labels",
            str(tmp_path / "lp.npy"), "--gallery", str(tmp_path / "g.npy"), "--gallery-labels",
            str(tmp_path / "lg.npy"), "--ranks", "1,5,20", "--fpir", "0.2"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    expected = identification(p, lp, g, lg, ranks=(1, 5, 20), fpir_levels=(0.2,))
    assert out["cmc"] == {str(k): v for k, v in expected.cmc.items()}
    assert set(out["cmc"]) == {"1", "5", "20"}
    assert out["dir_at_fpir"]["0.2"]["1"] == expected.dir_at_fpir[0.2][1]
    assert out["num_mated_probes"] == 20 and out["num_nonmated_probes"] == 5


def test_cli_identification_bad_input(tmp_path):
    from cdface.errors import FormatError

    np.save(tmp_path / "p.npy", np.zeros((3, 4), np.float32))
    np.save(tmp_path / "lp.npy", np.zeros(2, np.int64))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["score", "identification", "--probe", str(tmp_path / "p.npy"), "--probe-labels",
                              str(tmp_path / "lp.npy"), "--gallery", str(tmp_path / "p.npy"), "--gallery-labels",
                              str(tmp_path / "lp.npy")])
    with pytest.raises(FormatError, match="3 entries"):
        args.func(args)


def test_torch_inputs_give_the_numpy_numbers():
    rng = np.random.default_rng(9)
    g = rng.normal(size=(120, 8)).astype(np.float32)
    lg = np.r_[np.arange(30), np.full(90, -5)]
    p = np.r_[g[:30] + 0.9 * rng.normal(size=(30, 8)).astype(np.float32), rng.normal(size=(6, 8)).astype(np.float32)]
    lp = np.r_[np.arange(30), np.arange(50, 56)]
    a = identification(p, lp, g, lg, ranks=(1, 5), fpir_levels=(0.5,), chunk=50)
    b = identification(torch.from_numpy(p), torch.from_numpy(lp), torch.from_numpy(g), torch.from_numpy(lg),
                       ranks=(1, 5), fpir_levels=(0.5,), chunk=50)
    assert a.to_dict() == b.to_dict()
    assert 0 < a.cmc[1] < 1
