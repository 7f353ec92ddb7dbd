"""Fast paths: float32 block-Gram IJB scores vs the exact float64 path, the tie-free ROC shortcut vs sklearn,
the torch backends (run here on CPU tensors) vs numpy, and the template-id lookup table."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cdface.eval.ijb import (
    _template_rows,
    fast_pair_scores,
    ijb_verification,
    image_features,
    template_features,
)
from cdface.eval.roc import roc_curve, tar_at_far
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


def test_fast_ijb_equals_exact_on_well_separated_scores():
    """TAR@FAR tables are identical when no two distinct exact scores lie within the float32 error."""
    rng = np.random.default_rng(0)
    feats, face, tmpl, med, pairs, labels = _ijb_data(rng, n_pairs=300)
    ex = ijb_verification(feats, face, tmpl, med, pairs, labels, exact=True)
    fa = ijb_verification(feats, face, tmpl, med, pairs, labels)
    assert ex.scores.dtype == np.float64 and fa.scores.dtype == np.float32
    assert np.max(np.abs(fa.scores - ex.scores)) < 1e-6
    distinct = np.unique(ex.scores)
    assert np.min(np.diff(distinct)) > 4e-6  # precondition: nothing the float32 rounding could reorder
    # same pair -> same score on both paths, so ties stay ties; hence the same ROC and table
    np.testing.assert_array_equal(fa.fpr, ex.fpr)
    np.testing.assert_array_equal(fa.tpr, ex.tpr)
    assert fa.tar_at_far == ex.tar_at_far
    # torch backend (the GPU route, here on CPU tensors): the same numbers up to float32 rounding
    tb = ijb_verification(torch.from_numpy(feats), face, tmpl, med, pairs, labels, backend="torch")
    assert np.max(np.abs(tb.scores - ex.scores)) < 1e-6
    assert tb.tar_at_far == ex.tar_at_far


def test_torch_template_pooling_matches_numpy():
    rng = np.random.default_rng(1)
    feats, face, tmpl, med, _, _ = _ijb_data(rng, n_img=700, n_tmpl=50)
    for use_norm in (True, False):
        xn = image_features(feats, face, use_norm_score=use_norm)
        xt = image_features(torch.from_numpy(feats), face, use_norm_score=use_norm)
        if use_norm:  # elementwise float32 only: the same bits
            np.testing.assert_array_equal(xt.numpy(), xn)
        else:  # the image norms are float32 sums, added in another order by torch
            np.testing.assert_allclose(xt.numpy(), xn, rtol=1e-6, atol=0)
            xt = torch.from_numpy(xn)  # pool the same inputs below
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
