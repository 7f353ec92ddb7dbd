"""Fast paths: float32 block-Gram IJB scores vs the exact float64 path, the tie-free ROC shortcut vs sklearn,
the torch backends (run here on CPU tensors) vs numpy, and the template-id lookup table."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cdface.eval.ijb import ijb_verification
from cdface.eval.ijb_fast import exact_near_thresholds, fast_pair_scores
from cdface.eval.ijb_templates import image_features, template_features
from cdface.eval.ijb_templates import template_rows as _template_rows
from cdface.eval.roc import far_points, roc_curve, tar_at_far
from cdface.eval.verification import evaluate_pairs, pair_distances

LEVELS = [10**-6, 10**-5, 10**-4, 10**-3, 10**-2, 10**-1]


def _ijb_data(rng, n_img=1500, n_tmpl=120, dim=32, n_pairs=6000):
    subject = rng.integers(0, 15, n_tmpl)
    centres = rng.normal(size=(15, dim))
    templates = np.r_[np.arange(n_tmpl), rng.integers(0, n_tmpl, n_img - n_tmpl)] * 2 + 1
    medias = rng.integers(0, 30, n_img)
    feats = (centres[subject[(templates - 1) // 2]] + 1.3 * rng.normal(size=(n_img, dim))).astype(np.float32)
    faceness = rng.uniform(0.3, 1.0, n_img).astype(np.float32)
    p = rng.integers(0, n_tmpl, size=(n_pairs, 2))
    p[:, 1] = (p[:, 0] + rng.integers(1, n_tmpl, n_pairs)) % n_tmpl  # no self pairs (IJB has none)
    labels = (subject[p[:, 0]] == subject[p[:, 1]]).astype(np.int64)
    return feats, faceness, templates, medias, p * 2 + 1, labels


@pytest.mark.parametrize("tile", [16, 50, 2048])
def test_block_gram_scores_within_1e6_of_exact(tile):
    rng = np.random.default_rng(tile)
    t = rng.normal(size=(150, 512))
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    r1, r2 = rng.integers(0, 150, 20000), rng.integers(0, 150, 20000)  # both orders, diagonal, all tiles
    exact = np.sum(t[r1] * t[r2], -1)
    fast = fast_pair_scores(t, r1, r2, tile=tile)
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    assert np.max(np.abs(fast - exact)) < 1e-6
    # (a, b) and (b, a) read the same Gram entry: symmetric pairs score identically
    np.testing.assert_array_equal(fast_pair_scores(t, r2, r1, tile=tile), fast)
    # the torch route (CUDA when given CUDA tensors) is the same computation
    got = fast_pair_scores(torch.from_numpy(t), torch.from_numpy(r1), torch.from_numpy(r2), tile=tile)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), fast)


def _picked(res_or_curve, levels=LEVELS):
    fpr, tpr = (res_or_curve.fpr, res_or_curve.tpr) if hasattr(res_or_curve, "fpr") else res_or_curve[:2]
    k = far_points(fpr, levels)
    return fpr[k].tolist(), tpr[k].tolist()


def test_fast_ijb_equals_exact_on_well_separated_scores():
    rng = np.random.default_rng(0)
    feats, face, tmpl, med, pairs, labels = _ijb_data(rng, n_pairs=300)
    ex = ijb_verification(feats, face, tmpl, med, pairs, labels, exact=True)
    fa = ijb_verification(feats, face, tmpl, med, pairs, labels)
    assert ex.scores.dtype == np.float64 and fa.scores.dtype == np.float64
    assert np.max(np.abs(fa.scores - ex.scores)) < 1e-6
    assert fa.tar_at_far == ex.tar_at_far and _picked(fa) == _picked(ex)
    # torch backend (the GPU route, here on CPU tensors): the same table
    for use_norm in (True, False):
        ex = ijb_verification(feats, face, tmpl, med, pairs, labels, use_norm_score=use_norm, exact=True)
        tb = ijb_verification(torch.from_numpy(feats), face, tmpl, med, pairs, labels, use_norm_score=use_norm,
                              backend="torch")
        assert np.max(np.abs(tb.scores - ex.scores)) < 1e-6
        assert tb.tar_at_far == ex.tar_at_far and _picked(tb) == _picked(ex)


def _near_tie_ijb(rng, n_base=40, copies=8, dim=32, n_pairs=30000):
    """Templates in groups of near-duplicates (images equal or 1-2 float32 ulps apart), random labels:
    thousands of genuine/impostor scores tie or lie within 1e-7 of each other at every FAR level."""
    base = rng.normal(size=(n_base, dim)).astype(np.float32)
    n_tmpl = n_base * copies
    imgs = np.repeat(base, copies, axis=0)
    ulps = rng.integers(-2, 3, size=imgs.shape) * (rng.random((n_tmpl, 1)) < 0.7)  # 30% exact copies
    imgs = imgs + ulps * np.spacing(imgs)
    templates = np.arange(n_tmpl) * 2 + 1
    medias = np.arange(n_tmpl)
    face = np.ones(n_tmpl, np.float32)
    p = rng.integers(0, n_tmpl, size=(n_pairs, 2))
    p[:, 1] = (p[:, 0] + rng.integers(1, n_tmpl, n_pairs)) % n_tmpl
    labels = (rng.random(n_pairs) < 0.3).astype(np.int64)
    return imgs.astype(np.float32), face, templates, medias, p * 2 + 1, labels


@pytest.mark.parametrize("seed", range(3))
def test_fast_ijb_table_equals_exact_with_near_ties(seed):
    rng = np.random.default_rng(100 + seed)
    feats, face, tmpl, med, pairs, labels = _near_tie_ijb(rng)
    ex = ijb_verification(feats, face, tmpl, med, pairs, labels, exact=True)
    # the raw float32 scores reorder near-tied pairs: their curve differs from the exact one
    uniq, tf = template_features(image_features(feats, face), tmpl, med)
    raw = fast_pair_scores(tf, _template_rows(uniq, pairs[:, 0], "p"), _template_rows(uniq, pairs[:, 1], "p"))
    gaps = np.diff(np.unique(ex.scores))
    assert np.count_nonzero(gaps < 1e-7) > 1000  # precondition: many near-ties
    raw_curve = roc_curve(labels, raw)
    assert raw_curve[0].shape != ex.fpr.shape or not np.array_equal(raw_curve[1], ex.tpr)
    for backend in ("numpy", "torch"):
        fa = ijb_verification(feats, face, tmpl, med, pairs, labels, backend=backend)
        assert fa.tar_at_far == ex.tar_at_far
        assert _picked(fa) == _picked(ex)


def test_near_tie_set_defeats_raw_float32_table():
    """At least one of the near-tie sets above has a raw float32 TAR table that differs from the exact one
    (so those tests exercise the rescoring, not luck)."""
    assert any(_raw_differs(s) for s in range(3))


def _raw_differs(seed):
    rng = np.random.default_rng(100 + seed)
    feats, face, tmpl, med, pairs, labels = _near_tie_ijb(rng)
    ex = ijb_verification(feats, face, tmpl, med, pairs, labels, exact=True)
    uniq, tf = template_features(image_features(feats, face), tmpl, med)
    raw = fast_pair_scores(tf, _template_rows(uniq, pairs[:, 0], "p"), _template_rows(uniq, pairs[:, 1], "p"))
    return tar_at_far(*roc_curve(labels, raw)[:2], LEVELS) != ex.tar_at_far


@pytest.mark.parametrize("seed", range(40))
def test_window_rescoring_is_exact_under_adversarial_error(seed):
    """exact_near_thresholds with the largest allowed error on every pair and tiny initial windows (forcing
    the widening loop): the picked points always equal those of the exact scores."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 4000))
    bound = 10.0 ** rng.uniform(-4, -1)
    exact = np.round(rng.normal(size=n) * rng.uniform(0.5, 30), int(rng.integers(1, 4)))  # many ties
    labels = (rng.random(n) < rng.uniform(0.01, 0.9)).astype(np.int64)
    exact += labels * rng.uniform(0, 1)
    fast = (exact + rng.choice([-1.0, 0.0, 1.0], n) * bound * rng.uniform(0.5, 1.0, n)).astype(np.float64)
    levels = sorted(set(LEVELS) | {float(rng.uniform(0, 1)), 0.5})
    calls = []

    def rescore(idx):
        calls.append(idx.size)
        return exact[idx]

    h, fpr, tpr = exact_near_thresholds(fast, labels, levels, rescore, bound * 1.0000001,
                                        ranks=int(rng.integers(0, 3)), points=int(rng.integers(0, 2)))
    ref = roc_curve(labels, exact)
    assert tar_at_far(fpr, tpr, levels) == tar_at_far(ref[0], ref[1], levels)
    assert _picked((fpr, tpr), levels) == _picked(ref, levels)
    assert np.all(h[h != fast] == exact[h != fast])
    assert sum(calls) <= n


def test_torch_template_pooling_matches_numpy():
    rng = np.random.default_rng(1)
    feats, face, tmpl, med, _, _ = _ijb_data(rng, n_img=700, n_tmpl=50)
    for use_norm in (True, False):
        xn = image_features(feats, face, use_norm_score=use_norm)
        xt = image_features(torch.from_numpy(feats), face, use_norm_score=use_norm)
        # elementwise float32, and the image norms come from numpy on both backends: the same bits
        np.testing.assert_array_equal(xt.numpy(), xn)
        for norm in ("sklearn", "plain"):
            un, tn = template_features(xn, tmpl, med, norm=norm)
            ut, tt = template_features(xt, tmpl, med, norm=norm)
            np.testing.assert_array_equal(ut, un)
            np.testing.assert_allclose(tt.numpy(), tn, rtol=0, atol=1e-15)


@pytest.mark.parametrize("seed", range(6))
def test_tie_free_roc_shortcut_matches_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    for n in (1, 2, 3, 4, 7, 50, 2000):
        labels = (rng.random(n) < [0.0, 1.0, 0.5, 0.02, 0.5, 0.3][seed]).astype(int)
        scores = rng.normal(size=n).astype(np.float32 if seed % 2 else np.float64)
        for drop in (True, False):
            with warnings.catch_warnings():  # sklearn warns when a class is absent (NaN rates)
                warnings.simplefilter("ignore")
                ref = metrics.roc_curve(labels, scores, drop_intermediate=drop)
            got = roc_curve(labels, scores, drop_intermediate=drop)
            for g, r in zip(got, ref):
                np.testing.assert_array_equal(g, r)
        if labels.any() and not labels.all():
            assert tar_at_far(got[0], got[1], LEVELS) == tar_at_far(ref[0], ref[1], LEVELS)


def test_roc_rejects_bad_input():
    with pytest.raises(ValueError):
        roc_curve([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        roc_curve([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError):
        roc_curve([0.5, 1.0], [0.1, 0.2])
    fpr, tpr, _ = roc_curve(np.array([True, False]), [0.3, 0.2])
    np.testing.assert_array_equal(tpr, [0, 1, 1])


def test_template_rows_lookup_and_search():
    uniq = np.array([3, 5, 9])
    np.testing.assert_array_equal(_template_rows(uniq, np.array([9, 3, 5, 5]), "x"), [2, 0, 1, 1])
    for bad in (4, -1, 10, 10**12):
        with pytest.raises(ValueError, match=f"template id {bad} "):
            _template_rows(uniq, np.array([3, bad]), "x")
    big = np.array([-7, 2, 10**12])  # negative / huge ids: binary search
    np.testing.assert_array_equal(_template_rows(big, np.array([10**12, -7]), "x"), [2, 0])
    with pytest.raises(ValueError):
        _template_rows(big, np.array([5]), "x")


def test_pairs_torch_backend_matches_numpy():
    rng = np.random.default_rng(2)
    n = 900
    a = rng.normal(size=(n, 64))
    same = rng.random(n) < 0.5
    b = np.where(same[:, None], a + 0.9 * rng.normal(size=(n, 64)), rng.normal(size=(n, 64)))
    emb = np.empty((2 * n, 64))
    emb[0::2], emb[1::2] = a, b
    emb[4] = 0.0  # a zero row: sklearn's near-zero-norm rule on both paths
    d_np = pair_distances(emb)
    d_t = pair_distances(torch.from_numpy(emb), backend="torch")
    np.testing.assert_allclose(d_t, d_np, rtol=0, atol=1e-13)
    ref = evaluate_pairs(emb, same)
    got = evaluate_pairs(torch.from_numpy(emb), torch.from_numpy(same), backend="torch")
    assert got.to_dict(curves=True) == ref.to_dict(curves=True)
    with pytest.raises(ValueError):
        evaluate_pairs(emb, same, backend="jax")
