"""The IJB 1:1 fast path (ijb_fast) against the reference implementation (ijb_exact) on random inputs full of
exact score ties, and the locality of insightface's threshold rule that the fast path's proof rests on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdface.eval import ijb_exact, ijb_fast
from cdface.eval.ijb import ijb_verification
from cdface.eval.ijb_templates import image_features, template_features, template_rows
from cdface.eval.roc import far_point_within, far_points, roc_curve, tar_at_far

LEVELS = [10**-6, 10**-5, 10**-4, 10**-3, 10**-2, 10**-1]


def _tied_ijb(rng: np.random.Generator, n_base: int, copies: int, dim: int, n_pairs: int, p_genuine: float):
    """Templates that are exact copies of a few small-integer vectors (so many pairs score exactly the same),
    each template made of 1-3 images in 1-2 medias; labels drawn at random, so ties mix genuine and impostor."""
    base = rng.integers(-2, 3, size=(n_base, dim)).astype(np.float32)
    base[np.all(base == 0, axis=1), 0] = 1.0
    n_tmpl = n_base * copies
    per = rng.integers(1, 4, n_tmpl)  # images per template
    templates = np.repeat(np.arange(n_tmpl), per)
    feats = base[templates // copies].copy()  # every image of a template equals its base vector
    medias = templates * 2 + (rng.random(templates.size) < 0.5)
    face = np.ones(templates.size, np.float32)
    p = rng.integers(0, n_tmpl, size=(n_pairs, 2))
    p[:, 1] = (p[:, 0] + rng.integers(1, n_tmpl, n_pairs)) % n_tmpl
    labels = (rng.random(n_pairs) < p_genuine).astype(np.int64)
    return feats, face, templates * 3 + 7, medias, p * 3 + 7, labels


def _picks(fpr, tpr, levels):
    k = far_points(fpr, levels)
    return fpr[k].tolist(), tpr[k].tolist()


def _case(seed: int):
    rng = np.random.default_rng(seed)
    data = _tied_ijb(rng, n_base=int(rng.integers(4, 16)), copies=int(rng.integers(2, 8)),
                     dim=int(rng.integers(2, 9)), n_pairs=int(rng.integers(1000, 6000)),
                     p_genuine=float(rng.uniform(0.05, 0.6)))
    return data, sorted(set(LEVELS) | {float(rng.uniform(0, 1))})


SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_path_equals_reference_on_random_ties(seed):
    data, levels = _case(seed)
    feats, face, tmpl, med, pairs, labels = data
    ref_scores, n_templates = ijb_exact.verification_scores(feats, face, tmpl, med, pairs)
    assert np.unique(ref_scores).size < ref_scores.size // 4  # precondition: exact ties everywhere
    ref_fpr, ref_tpr, _ = roc_curve(labels, ref_scores)
    for backend in ("numpy", "torch"):
        scores, fpr, tpr, n = ijb_fast.verification(
            torch.from_numpy(feats) if backend == "torch" else feats, face, tmpl, med, pairs, labels,
            True, True, levels, None, backend)
        assert n == n_templates
        assert tar_at_far(fpr, tpr, levels) == tar_at_far(ref_fpr, ref_tpr, levels)
        assert _picks(fpr, tpr, levels) == _picks(ref_fpr, ref_tpr, levels)
        rescored = scores != scores.astype(np.float32)  # pairs the window rescoring replaced
        np.testing.assert_array_equal(scores[rescored], ref_scores[rescored])
        bound = ijb_fast.float32_score_bound(np.eye(1, feats.shape[1]))
        assert np.max(np.abs(scores - ref_scores)) <= bound
    # and through the public entry point
    fast = ijb_verification(*data, far_levels=levels)
    exact = ijb_verification(*data, far_levels=levels, exact=True)
    assert fast.tar_at_far == exact.tar_at_far and fast.num_templates == exact.num_templates
    np.testing.assert_array_equal(exact.scores, ref_scores)


def test_raw_float32_scores_would_miss_the_table_on_these_ties():
    """The cases above need the exact rescoring: on some, the float32 scores alone give another TAR table."""
    differs = 0
    for seed in SEEDS:
        (feats, face, tmpl, med, pairs, labels), levels = _case(seed)
        ref, _ = ijb_exact.verification_scores(feats, face, tmpl, med, pairs)
        uniq, tf = template_features(image_features(feats, face), tmpl, med)
        rows = [template_rows(uniq, pairs[:, i], "pairs") for i in (0, 1)]
        raw = ijb_fast.fast_pair_scores(tf, *rows)
        differs += tar_at_far(*roc_curve(labels, raw)[:2], levels) != tar_at_far(*roc_curve(labels, ref)[:2], levels)
    assert differs > 0


@pytest.mark.parametrize("seed", range(30))
def test_threshold_rule_locality(seed):
    """far_point_within's answer, when it gives one, is far_points' pick on any curve that agrees inside
    [a, b] and is non-decreasing: the lemma the fast path needs, checked on random extensions."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    fpr = np.sort(np.round(rng.uniform(0, 1, n), int(rng.integers(1, 3))))  # ties in FPR too
    fpr[0] = 0.0
    level = float(rng.choice([rng.uniform(0, 1), *fpr]))
    a = int(rng.integers(0, n))
    b = int(rng.integers(a, n))
    k = far_point_within(fpr, a, b, level)
    assert k is None or k == a + int(far_points(fpr[a:b + 1], [level])[0])
    if k is None:
        return
    for _ in range(50):  # re-draw everything outside [a, b], keeping the curve non-decreasing
        other = fpr.copy()
        other[:a] = np.sort(rng.uniform(0, fpr[a], a)) if a else other[:a]
        other[b + 1:] = np.sort(rng.uniform(fpr[b], 1, n - b - 1))
        if rng.random() < 0.3 and a:
            other[:a] = fpr[a]  # ties with the window's first point
        if rng.random() < 0.3 and b + 1 < n:
            other[b + 1:] = fpr[b]
        assert int(far_points(other, [level])[0]) == k
