"""Error-versus-reject: known answers, and agreement with slow loops written after MagFace's eval_quality.py
(per-rate threshold) and after the fixed-threshold ERC definition."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from cdface.eval.cli import register
from cdface.eval.erc import error_versus_reject, fmr_index


def _dist(a, b):
    sim = np.clip(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)), -1.0, 1.0)
    return np.arccos(sim) / math.pi


def _magface_loop(dist, same, q, rates, fixed):
    """MagFace's perform_1v1_quality_eval on pair distances and pair qualities, with its FMR=1e-3 index
    walk; `fixed` takes the threshold from all pairs once instead of from the pairs left."""
    def threshold_of(neg):
        neg = np.sort(neg)
        fmr, idx = 1, len(neg) - 1
        while idx >= 0:
            if fmr == 1e-3:
                return neg[idx]
            if idx == 0:
                return None
            idx = int(idx / 10)
            fmr /= float(10)

    order = np.argsort(q)
    n = len(same)
    fixed_t = threshold_of(dist[same == 0])
    out = []
    for u in rates:
        keep = order[int(u * n):]
        d = dist[keep]
        pos, neg = np.sort(d[same[keep] == 1]), np.sort(d[same[keep] == 0])
        t = fixed_t if fixed else threshold_of(neg)
        out.append((len(pos) - sum(pos < t)) / len(pos))
    return np.array(out)


def _image_pair_loop(emb, pairs, same, quality, rates, fixed):
    dist = _dist(emb[pairs[:, 0]], emb[pairs[:, 1]])
    q = np.array([min(quality[a], quality[b]) for a, b in pairs])
    return _magface_loop(dist, same, q, rates, fixed)


def _data(seed, n_pairs=4000, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_pairs, dim))
    same = (rng.random(n_pairs) < 0.3).astype(int)
    noise = rng.uniform(0.2, 2.0, size=(2 * n_pairs, 1))  # low quality = noisy: norm tracks quality below
    emb = np.empty((2 * n_pairs, dim))
    emb[0::2] = centres + noise[0::2] * rng.normal(size=(n_pairs, dim))
    other = np.where(same[:, None] == 1, centres, rng.normal(size=(n_pairs, dim)))
    emb[1::2] = other + noise[1::2] * rng.normal(size=(n_pairs, dim))
    quality = 1.0 / noise[:, 0] + 0.1 * rng.random(2 * n_pairs)
    pairs = np.arange(2 * n_pairs).reshape(-1, 2)
    return emb, pairs, same, quality


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", ["fixed", "per_rate"])
def test_agrees_with_magface_loop(seed, mode):
    emb, pairs, same, quality = _data(seed)
    rates = np.arange(0, 0.98, 0.05)
    ref = _image_pair_loop(emb, pairs, same, quality, rates, fixed=mode == "fixed")
    res = error_versus_reject(emb, pairs, same, quality, threshold=mode)
    np.testing.assert_array_equal(res.reject, rates)
    np.testing.assert_array_equal(res.fnmr[1e-3], ref)
    # a good quality measure: rejecting the noisiest pairs lowers FNMR
    assert res.fnmr[1e-3][-1] < res.fnmr[1e-3][0]
    assert res.auc[1e-3] == pytest.approx(np.trapezoid(ref, rates), rel=1e-12)
    if mode == "per_rate":  # re-thresholding keeps the FMR near its level
        assert np.all(res.fmr_obtained[1e-3] <= 1e-3)


def test_known_answer():
    # 4 genuine, 4 impostor pairs of 2-D features at given angles (degrees); pair qualities 1..8
    ang = np.deg2rad
    angles_gen = [10, 20, 30, 40]
    angles_imp = [50, 60, 70, 80]
    emb, quality = [], []
    for k, a in enumerate(angles_gen + angles_imp):
        emb += [[1.0, 0.0], [np.cos(ang(a)), np.sin(ang(a))]]
        quality += [k + 1, 100.0]
    emb, quality = np.array(emb), np.array(quality)
    pairs = np.arange(16).reshape(-1, 2)
    same = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    # FMR 0.5: index (4 - 1) // 2 = 1 -> threshold = the 2nd smallest impostor distance, 60/180
    assert fmr_index(4, 0.5) == 1
    res = error_versus_reject(emb, pairs, same, quality, fmr_levels=(0.5,), reject_fractions=(0.0, 0.25, 0.5))
    np.testing.assert_allclose(res.thresholds[0.5], 60 / 180)
    # no rejection: genuine at 10..40 deg all match (< 60) -> FNMR 0; impostor 50 deg accepted -> FMR 1/4
    # reject 25% (2 pairs: the 10 and 20 deg genuine) and 50% (all four genuine): FNMR 0, then undefined
    np.testing.assert_array_equal(res.fnmr[0.5][:2], [0.0, 0.0])
    assert math.isnan(res.fnmr[0.5][2])
    np.testing.assert_allclose(res.fmr_obtained[0.5], [0.25, 0.25, 0.25])
    assert (res.num_genuine, res.num_impostor, res.num_pairs) == (4, 4, 8)


def test_per_rate_records_nothing_where_the_reference_does_not():
    emb, pairs, same, quality = _data(2, n_pairs=400)  # ~120 impostors: fewer than 101 left after 20% rejected
    res = error_versus_reject(emb, pairs, same, quality, threshold="per_rate")
    rates = np.arange(0, 0.98, 0.05)
    order = np.argsort(np.minimum(quality[pairs[:, 0]], quality[pairs[:, 1]]))
    left = np.array([np.count_nonzero(same[order[int(u * 400):]] == 0) for u in rates])
    assert np.all(np.isnan(res.fnmr[1e-3][left <= 100])) and np.all(np.isfinite(res.fnmr[1e-3][left > 100]))
    assert (left > 100).any() and (left <= 100).any()


def test_fmr_index_matches_repeated_division():
    for n in (1, 9, 10, 11, 999, 1000, 1001, 123457):
        idx = n - 1
        for j in range(1, 6):
            idx = int(idx / 10)
            assert fmr_index(n, 10.0**-j) == idx


def test_errors():
    emb, pairs, same, quality = _data(0, n_pairs=20)
    with pytest.raises(ValueError, match="threshold"):
        error_versus_reject(emb, pairs, same, quality, threshold="nope")
    with pytest.raises(ValueError, match="genuine and impostor"):
        error_versus_reject(emb, pairs, np.ones(20), quality)
    with pytest.raises(ValueError, match="finite"):
        error_versus_reject(emb, pairs, same, np.full(40, np.nan))


def test_cli_erc(tmp_path, capsys):
    emb, pairs, same, quality = _data(3, n_pairs=1500)
    np.save(tmp_path / "f.npy", emb.astype(np.float32))
    np.save(tmp_path / "s.npy", same.astype(bool))
    np.save(tmp_path / "q.npy", quality)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["score", "erc", "--features", str(tmp_path / "f.npy"), "--issame",
                              str(tmp_path / "s.npy"), "--quality", str(tmp_path / "q.npy")])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    expected = error_versus_reject(emb.astype(np.float32), pairs, same, quality)
    assert out["fnmr"]["0.001"] == [float(v) for v in expected.fnmr[1e-3]]
    assert out["auc"]["0.001"] == expected.auc[1e-3] and out["threshold_mode"] == "fixed"
    assert len(out["reject"]) == 20
    args = parser.parse_args(["score", "erc", "--features", str(tmp_path / "f.npy"), "--issame",
                              str(tmp_path / "s.npy"), "--threshold", "per-rate", "--no-curves"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["quality"] == "feature norm" and "fnmr" not in out and out["threshold_mode"] == "per_rate"


def test_ijb_erc_agrees_with_template_loop():
    """IJB 1:1 ERC: the template-pair cosines of ijb_verification, template quality = mean of its images'."""
    from cdface.eval.ijb import ijb_verification
    from cdface.eval.quality import ijb_erc

    rng = np.random.default_rng(7)
    n_img, n_tpl, dim = 900, 150, 8
    templates = np.sort(rng.integers(0, n_tpl, n_img))
    templates[:n_tpl] = np.arange(n_tpl)  # every template has an image
    templates = np.sort(templates)
    medias = templates * 10 + rng.integers(0, 2, n_img)
    subject = rng.integers(0, 40, n_tpl)
    centres = rng.normal(size=(40, dim))
    feats = (centres[subject[templates]] + rng.uniform(0.3, 2, (n_img, 1)) * rng.normal(size=(n_img, dim)))
    feats = feats.astype(np.float32)
    faceness = rng.uniform(0.5, 1.0, n_img)
    p1, p2 = rng.integers(0, n_tpl, 3000), rng.integers(0, n_tpl, 3000)
    keep = p1 != p2
    pairs = np.stack([p1[keep], p2[keep]], 1)
    labels = (subject[pairs[:, 0]] == subject[pairs[:, 1]]).astype(int)
    res, source = ijb_erc(feats, faceness, templates, medias, pairs, labels, "faceness", "ijbc")
    assert source == "detector faceness"
    scores = ijb_verification(feats, faceness, templates, medias, pairs, labels).scores
    t_quality = {t: np.mean(faceness[templates == t]) for t in range(n_tpl)}
    q = np.array([min(t_quality[a], t_quality[b]) for a, b in pairs])
    dist = np.arccos(np.clip(scores, -1, 1)) / math.pi
    rates = np.arange(0, 0.98, 0.05)
    np.testing.assert_array_equal(res.fnmr[1e-3], _magface_loop(dist, labels, q, rates, fixed=True))
    assert np.unique(res.fnmr[1e-3]).size > 5  # a real curve, not a constant
