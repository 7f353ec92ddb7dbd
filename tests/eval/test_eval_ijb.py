"""IJB 1:1 and 1:N: slow transcriptions of insightface's ijb_11.py / ijb_1n.py, sklearn, known answers."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from cdface.eval.ijb import ijb_identification, ijb_verification, image_features, template_features
from cdface.eval.roc import roc_curve, tar_at_far

LEVELS = [10**-6, 10**-5, 10**-4, 10**-3, 10**-2, 10**-1]


def _ref_template_feats(img_feats, templates, medias, choose=None, sklearn_norm=True):
    """Loop-per-template transcription of insightface's image2template_feature."""
    uniq = np.unique(templates if choose is None else choose)
    out = np.zeros((len(uniq), img_feats.shape[1]))
    for c, uqt in enumerate(uniq):
        (ind_t,) = np.where(templates == uqt)
        face = img_feats[ind_t]
        fm = medias[ind_t]
        um, cnt = np.unique(fm, return_counts=True)
        media_feats = []
        for u, ct in zip(um, cnt):
            (ind_m,) = np.where(fm == u)
            media_feats += [face[ind_m]] if ct == 1 else [np.mean(face[ind_m], axis=0, keepdims=True)]
        out[c] = np.sum(np.array(media_feats), axis=0)
    if sklearn_norm:
        norms = np.sqrt(np.einsum("ij,ij->i", out, out))
        norms[norms < 10 * np.finfo(np.float64).eps] = 1.0
        out = out / norms[:, None]
    else:
        out = out / np.sqrt(np.sum(out**2, -1, keepdims=True))
    return uniq, out


def _ref_scores(tf, uniq, p1, p2):
    t2id = np.zeros((max(uniq) + 1, 1), dtype=int)
    for c, u in enumerate(uniq):
        t2id[u] = c
    score = np.zeros(len(p1))
    for s in [np.arange(len(p1))[i:i + 7] for i in range(0, len(p1), 7)]:
        score[s] = np.sum(tf[t2id[p1[s]]] * tf[t2id[p2[s]]], -1).flatten()
    return score


def _ref_table(labels, scores):
    from sklearn.metrics import roc_curve as sk_roc

    fpr, tpr, _ = sk_roc(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    row = []
    for x in LEVELS:
        _, i = min(list(zip(abs(fpr - x), range(len(fpr)))))
        row.append(tpr[i])
    return row


def _synthetic_ijb(rng, n_img=900, n_tmpl=60, dim=16, n_pairs=4000, ties=False):
    subject = rng.integers(0, 12, n_tmpl)
    centres = rng.normal(size=(12, dim))
    templates = rng.integers(0, n_tmpl, n_img) * 3 + 5  # sparse ids
    templates[:n_tmpl] = np.arange(n_tmpl) * 3 + 5
    medias = rng.integers(0, 25, n_img) + 1000 * (templates % 2)  # shared media ids across templates
    feats = centres[subject[(templates - 5) // 3]] + rng.normal(size=(n_img, dim)) * 1.2
    feats *= rng.uniform(0.2, 3.0, size=(n_img, 1))
    if ties:
        feats = np.round(feats)
    faceness = rng.uniform(0.3, 1.0, n_img).astype(np.float32)
    p = rng.integers(0, n_tmpl, size=(n_pairs, 2))
    labels = (subject[p[:, 0]] == subject[p[:, 1]]).astype(int)
    return feats.astype(np.float32), faceness, templates, medias, p * 3 + 5, labels, subject


@pytest.mark.parametrize("use_norm,use_det", [(True, True), (False, True), (True, False)])
def test_template_features_and_scores_bit_exact(use_norm, use_det):
    rng = np.random.default_rng(7)
    feats, face, tmpl, med, pairs, labels, _ = _synthetic_ijb(rng)
    x = feats
    if not use_norm:
        x = x / np.sqrt(np.sum(x**2, -1, keepdims=True))
    if use_det:
        x = x * face[:, np.newaxis]
    np.testing.assert_array_equal(image_features(feats, face, use_norm, use_det), x)
    ref_u, ref_tf = _ref_template_feats(x, tmpl, med)
    u, tf = template_features(x, tmpl, med)
    np.testing.assert_array_equal(u, ref_u)
    np.testing.assert_array_equal(tf, ref_tf)
    res = ijb_verification(feats, face, tmpl, med, pairs, labels, use_norm_score=use_norm,
                           use_detector_score=use_det, num_threads=2, exact=True)
    np.testing.assert_array_equal(res.scores, _ref_scores(ref_tf, ref_u, pairs[:, 0], pairs[:, 1]))


@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_table_match_sklearn(ties):
    pytest.importorskip("sklearn")
    from sklearn.metrics import roc_curve as sk_roc

    rng = np.random.default_rng(11)
    for trial in range(30):
        n = int(rng.integers(3, 3000))
        labels = (rng.random(n) < rng.uniform(0.01, 0.6)).astype(int)
        labels[0], labels[1] = 1, 0
        scores = rng.normal(size=n) + labels * rng.uniform(0, 3)
        if ties or trial % 3 == 0:
            scores = np.round(scores * rng.integers(1, 6)) / 3.0
        fpr, tpr, th = roc_curve(labels, scores)
        rf, rt, rth = sk_roc(labels, scores)
        np.testing.assert_array_equal(fpr, rf)
        np.testing.assert_array_equal(tpr, rt)
        np.testing.assert_array_equal(th, rth)
        assert list(tar_at_far(fpr, tpr, LEVELS).values()) == _ref_table(labels, scores)


def test_ijb_11_end_to_end_matches_sklearn_table():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(3)
    feats, face, tmpl, med, pairs, labels, _ = _synthetic_ijb(rng, ties=True)
    res = ijb_verification(feats, face, tmpl, med, pairs, labels)
    assert list(res.tar_at_far.values()) == _ref_table(labels, res.scores)
    assert list(res.to_dict()["tar_at_far"]) == ["1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1"]


def test_four_templates_known_tars():
    # templates 1,2 of subject A; 3,4 of subject B; one image each, exact unit directions.
    feats = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0.6, 0.8, 0]], dtype=np.float32)
    face = np.ones(4, dtype=np.float32)
    tmpl = np.array([1, 2, 3, 4])
    med = np.array([10, 20, 30, 40])
    pairs = np.array([[1, 2], [3, 4], [1, 3], [2, 4], [1, 4]])
    labels = np.array([1, 1, 0, 0, 0])
    res = ijb_verification(feats, face, tmpl, med, pairs, labels)
    np.testing.assert_allclose(res.scores, [1.0, 0.8, 0.0, 0.6, 0.6], atol=1e-7)
    # distinct scores desc: 1.0 (+), 0.8 (+), 0.6 (-,-), 0.0 (-) -> (fps, tps) = (0,1) (0,2) (2,2) (3,2):
    # no collinear interior point, then (0, 0) is prepended
    np.testing.assert_allclose(res.fpr, [0, 0, 0, 2 / 3, 1])
    np.testing.assert_allclose(res.tpr, [0, 0.5, 1, 1, 1])
    # every level is nearest to fpr 0; in flipped order the first fpr 0 has tpr 1
    assert all(v == 1.0 for v in res.tar_at_far.values())


def test_media_average_only_for_multi_image_media():
    # one template, media 7 holds two images, media 3 one: feature = img0 + mean(img1, img2)
    feats = np.array([[2, 0], [0, 2], [0, 4]], dtype=np.float32)
    u, tf = template_features(feats, np.array([5, 5, 5]), np.array([3, 7, 7]))
    np.testing.assert_allclose(tf[0], np.array([2, 3]) / np.sqrt(13))


def _ref_1n(probe_feats, probe_ids, gal_feats, gal_ids):
    mask = []
    for q in probe_ids:
        pos = [i for i, x in enumerate(gal_ids) if q == x]
        assert len(pos) == 1
        mask.append(pos[0])
    sim = np.dot(probe_feats, gal_feats.T)
    top = np.argsort(-sim)
    n = sim.shape[0]
    out = {}
    for k in (1, 5, 10):
        out[k] = sum(mask[i] in top[i, :k] for i in range(n)) / n
    req = [math.ceil(n * x) for x in (0.01, 0.1)]
    pos_sims = []
    for i in range(n):
        pos_sims.append(sim[i, mask[i]])
        sim[i, mask[i]] = -2.0
    neg = heapq.nlargest(max(req), sim[np.where(sim > -2.0)])
    tp = [np.sum(np.array(pos_sims) > neg[k - 1]) / n for k in req]
    return out, tp


def test_ijb_1n_insightface_matches_transcription():
    rng = np.random.default_rng(5)
    n_sub, dim = 40, 8
    centres = rng.normal(size=(n_sub, dim))
    # gallery: one template per subject, split over two galleries; probes: 150 templates of gallery subjects
    g_t = np.arange(n_sub) + 100
    p_t = np.arange(150) + 1000
    p_sub = rng.integers(0, n_sub, 150)
    img_t = np.r_[np.repeat(g_t, 3), np.repeat(p_t, 2)]
    img_sub = np.r_[np.repeat(np.arange(n_sub), 3), np.repeat(p_sub, 2)]
    feats = (centres[img_sub] + rng.normal(size=(img_t.size, dim)) * 1.5).astype(np.float32)
    feats[5] = feats[8]  # a few exact duplicates
    med = rng.integers(0, 3, img_t.size)
    face = rng.uniform(0.5, 1, img_t.size).astype(np.float32)
    g1 = (np.repeat(g_t[:20], 2), np.repeat(np.arange(20), 2))
    g2 = (np.repeat(g_t[20:], 2), np.repeat(np.arange(20, n_sub), 2))
    probes = (np.repeat(p_t, 2), np.repeat(p_sub, 2))
    res = ijb_identification(feats, face, img_t, med, [g1, g2], probes)
    x = feats * face[:, None]
    gu, gf = _ref_template_feats(x, img_t, med, choose=g_t, sklearn_norm=False)
    pu, pf = _ref_template_feats(x, img_t, med, choose=p_t, sklearn_norm=False)
    cmc, tp = _ref_1n(pf, p_sub, gf, np.arange(n_sub))
    assert res.cmc == cmc
    assert list(res.tpir_at_fpir.values()) == tp
    nist = ijb_identification(feats, face, img_t, med, [g1, g2], probes, protocol="nist")
    assert len(nist.per_gallery) == 2
    assert nist.per_gallery[0]["num_mated"] + nist.per_gallery[1]["num_mated"] == 150
    for g in nist.per_gallery:
        assert 0.0 <= g["rank1"] <= g["rank5"] <= g["rank10"] <= 1.0


def test_nist_known_answer():
    # gallery subjects 0, 1 (unit axes); probe 0 mated to subject 0 at rank 1, probe 1 non-mated (subject 9)
    feats = np.array([[1, 0, 0], [0, 1, 0], [1, 0.1, 0], [0, 0, 1]], dtype=np.float32)
    t = np.array([1, 2, 3, 4])
    res = ijb_identification(feats, np.ones(4, np.float32), t, t, [(t[:2], np.array([0, 1])), (t[:1], [0])],
                             (t[2:], np.array([0, 9])), protocol="nist", fpir_levels=(0.5,))
    g1 = res.per_gallery[0]
    assert g1["rank1"] == 1.0 and g1["num_mated"] == 1 and g1["num_nonmated"] == 1
    # non-mated top score is 0.0: FPIR 0.5 -> floor(0.5 * 1) = 0 -> threshold = 0.0; mate scores ~0.995 > 0
    assert g1["tpir_at_fpir"]["0.5"] == 1.0 and g1["thresholds"]["0.5"] == 0.0


def test_1n_nan_mate_ranks_last_and_unprobed_duplicate_subjects_are_allowed():
    from cdface.eval.ijb import _insightface_1n, _mated_ranks

    sim = np.array([[0.3, np.nan, 0.1], [0.9, 0.2, 0.5]])
    # argsort(-sim) puts NaN last: the NaN mate of row 0 is rank 3, not 1
    assert _mated_ranks(sim, np.array([1, 1]), max_rank=10).tolist() == [3, 3]
    gal = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    gal_sids = np.array([0, 5, 5])  # subject 5 twice, but no probe asks for it
    probes = np.array([[1.0, 0.1]])
    cmc, _, _ = _insightface_1n(probes, np.array([0]), gal, gal_sids, (1,), (0.5,))
    assert cmc[1] == 1.0
