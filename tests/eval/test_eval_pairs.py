"""Pair verification: known answers, and bit-equality with a slow transcription of insightface's protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cdface.eval.verification import (
    embedding_norm_stats,
    evaluate_pairs,
    flip_fuse,
    kfold_bounds,
    slinear_interp,
)


def _sk_normalize(x):
    x = np.array(x, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms < 10 * np.finfo(np.float64).eps] = 1.0
    return x / norms[:, None]


def _reference_evaluate(emb, issame, nfolds=10, far_target=1e-3):
    """A slow, literal transcription of insightface's calculate_roc / calculate_val (loops everywhere)."""
    emb = _sk_normalize(emb)
    e1, e2 = emb[0::2], emb[1::2]
    issame = np.asarray(issame)
    n = len(issame)
    idx = np.arange(n)
    if nfolds == 1:
        splits = [(idx, idx)]
    else:
        sizes = [n // nfolds + (1 if i < n % nfolds else 0) for i in range(nfolds)]
        splits, start = [], 0
        for s in sizes:
            test = idx[start:start + s]
            splits.append((np.concatenate([idx[:start], idx[start + s:]]), test))
            start += s
    dist = np.sum(np.square(np.subtract(e1, e2)), 1)

    def acc_of(th, d, a):
        p = np.less(d, th)
        tp = np.sum(np.logical_and(p, a))
        fp = np.sum(np.logical_and(p, np.logical_not(a)))
        tn = np.sum(np.logical_and(np.logical_not(p), np.logical_not(a)))
        fn = np.sum(np.logical_and(np.logical_not(p), a))
        tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
        fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
        return tpr, fpr, float(tp + tn) / d.size

    def val_far(th, d, a):
        p = np.less(d, th)
        ta = np.sum(np.logical_and(p, a))
        fa = np.sum(np.logical_and(p, np.logical_not(a)))
        return float(ta) / float(np.sum(a)), float(fa) / float(np.sum(np.logical_not(a)))

    ths = np.arange(0, 4, 0.01)
    tprs = np.zeros((nfolds, len(ths)))
    fprs = np.zeros((nfolds, len(ths)))
    accuracy = np.zeros(nfolds)
    for f, (tr, te) in enumerate(splits):
        acc_train = np.zeros(len(ths))
        for i, th in enumerate(ths):
            _, _, acc_train[i] = acc_of(th, dist[tr], issame[tr])
        best = np.argmax(acc_train)
        for i, th in enumerate(ths):
            tprs[f, i], fprs[f, i], _ = acc_of(th, dist[te], issame[te])
        _, _, accuracy[f] = acc_of(ths[best], dist[te], issame[te])
    vths = np.arange(0, 4, 0.001)
    val = np.zeros(nfolds)
    far = np.zeros(nfolds)
    for f, (tr, te) in enumerate(splits):
        far_train = np.zeros(len(vths))
        for i, th in enumerate(vths):
            _, far_train[i] = val_far(th, dist[tr], issame[tr])
        if np.max(far_train) >= far_target:
            th = _old_scipy_interp1d_slinear(far_train, vths, far_target)
        else:
            th = 0.0
        val[f], far[f] = val_far(th, dist[te], issame[te])
    return dict(
        tpr=np.mean(tprs, 0), fpr=np.mean(fprs, 0), accuracy=accuracy,
        acc=np.mean(accuracy), std=np.std(accuracy), val=np.mean(val), val_std=np.std(val), far=np.mean(far),
    )


def _old_scipy_interp1d_slinear(x, y, xv):
    """interp1d(kind='slinear') as scipy <= 1.8 built it (what insightface ran): a degree-1 BSpline with
    knots [x0, x..., xn]; duplicates were allowed then (newer scipy refuses them). The test using this
    reference is skipped without scipy: falling back on the function under test would compare it to itself."""
    BSpline = pytest.importorskip("scipy.interpolate").BSpline
    order = np.argsort(x, kind="mergesort")
    x, y = np.asarray(x)[order], np.asarray(y)[order]
    return float(BSpline.construct_fast(np.r_[x[0], x, x[-1]], np.ascontiguousarray(y, float), 1)(xv))


def _planted_pairs(rng, n_pairs, dim, noise, quantize=None):
    base = rng.normal(size=(n_pairs, dim))
    same = rng.random(n_pairs) < 0.5
    near = base + noise * rng.normal(size=(n_pairs, dim))
    other = np.where(same[:, None], near, rng.normal(size=(n_pairs, dim)))
    emb = np.empty((2 * n_pairs, dim))
    emb[0::2], emb[1::2] = base, other
    if quantize:  # few distinct values -> many exactly tied distances
        emb = np.round(emb * quantize) / quantize
    return emb, same


@pytest.mark.parametrize(
    "n_pairs,dim,noise,quantize,nfolds",
    [(1203, 16, 1.0, None, 10), (600, 4, 1.5, 1, 10), (97, 8, 0.8, 2, 10), (150, 3, 2.0, 1, 1)],
)
def test_matches_reference_transcription(n_pairs, dim, noise, quantize, nfolds):
    rng = np.random.default_rng(n_pairs)
    emb, same = _planted_pairs(rng, n_pairs, dim, noise, quantize)
    ref = _reference_evaluate(emb, same, nfolds=nfolds)
    got = evaluate_pairs(emb, same, nfolds=nfolds)
    assert got.accuracy == ref["acc"] and got.accuracy_std == ref["std"]
    np.testing.assert_array_equal(got.fold_accuracies, ref["accuracy"])
    np.testing.assert_array_equal(got.tpr, ref["tpr"])
    np.testing.assert_array_equal(got.fpr, ref["fpr"])
    assert got.val == ref["val"] and got.val_std == ref["val_std"] and got.far == ref["far"]


def test_degenerate_folds_all_same_in_a_fold():
    """Sorted labels: some test folds hold only genuine pairs (tpr/fpr = 0 rule, accuracy still defined)."""
    rng = np.random.default_rng(5)
    emb, _ = _planted_pairs(rng, 200, 8, 1.0)
    same = np.zeros(200, dtype=bool)
    same[:100] = True
    got = evaluate_pairs(emb, same)
    assert np.isnan(got.val)  # a fold without impostors: the reference would raise ZeroDivisionError
    assert 0.0 <= got.accuracy <= 1.0
    assert got.fold_accuracies.shape == (10,)


def test_hand_computable_accuracy():
    # 20 pairs, two per fold. Genuine pairs are identical (dist 0), impostors opposite (dist 4).
    e = np.eye(4)
    rows = []
    same = np.array([1, 0] * 10, dtype=bool)
    for s in same:
        rows += [e[0], e[0]] if s else [e[0], -e[0]]
    res = evaluate_pairs(np.array(rows) * 3.0, same)
    assert res.accuracy == 1.0 and res.accuracy_std == 0.0
    # best threshold: the first one with 0 < t (and 4 >= t), i.e. 0.01
    np.testing.assert_allclose(res.fold_thresholds, 0.01)
    # no threshold below 4 accepts an impostor, so FAR never reaches 1e-3: the reference then uses
    # threshold 0.0, which accepts nothing (dist < 0 is never true)
    assert res.val == 0.0 and res.far == 0.0


def test_one_mislabelled_pair_costs_its_fold():
    e = np.eye(3)
    same = np.array([1, 0] * 10, dtype=bool)
    rows = []
    for i, s in enumerate(same):
        flip = i == 0  # pair 0 is labelled genuine but orthogonal
        rows += [e[0], e[1]] if (not s or flip) else [e[0], e[0]]
    res = evaluate_pairs(np.array(rows), same)
    # 20 pairs -> folds of 2; fold 0 gets 1/2, the rest 1.0
    np.testing.assert_array_equal(res.fold_accuracies, [0.5] + [1.0] * 9)
    assert res.accuracy == 0.95


def test_kfold_bounds_match_sklearn_rule():
    assert kfold_bounds(23, 10) == [(0, 3), (3, 6), (6, 9), (9, 11), (11, 13), (13, 15), (15, 17), (17, 19),
                                    (19, 21), (21, 23)]
    assert kfold_bounds(5, 1) == [(0, 5)]
    with pytest.raises(ValueError):
        kfold_bounds(3, 10)
    sk = pytest.importorskip("sklearn.model_selection")
    for n in (10, 11, 19, 6000):
        ours = kfold_bounds(n, 10)
        for (start, stop), (_, test) in zip(ours, sk.KFold(10).split(np.arange(n))):
            np.testing.assert_array_equal(np.arange(start, stop), test)


def test_slinear_equals_scipy_on_steps_and_ties():
    interpolate = pytest.importorskip("scipy.interpolate")
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(2, 60))
        x = np.sort(rng.integers(0, 6, size=n) / rng.integers(1, 9))  # many repeated x values
        if trial % 3 == 0:
            x = rng.permutation(x)
        y = np.arange(n) * 0.001 if trial % 2 else rng.normal(size=n)
        xv = float(rng.choice(np.r_[x, rng.uniform(x.min(), x.max(), 3)]))
        expected = _old_scipy_interp1d_slinear(x, y, xv)
        if np.all(np.diff(np.sort(x)) > 0):  # modern interp1d still accepts distinct x: same numbers
            assert float(interpolate.interp1d(x, y, kind="slinear")(xv)) == expected
        got = slinear_interp(x, y, xv)
        assert got == expected or (np.isnan(got) and np.isnan(expected)), (x, y, xv)


def test_flip_fuse_and_xnorm():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(7, 5)).astype(np.float32)
    b = rng.normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_array_equal(flip_fuse(a, b), a.astype(np.float64) + b.astype(np.float64))
    total, cnt = 0.0, 0
    for arr in (a.astype(np.float64), b.astype(np.float64)):
        for row in arr:
            total += np.linalg.norm(row)
            cnt += 1
    assert embedding_norm_stats(a, b) == total / cnt


def test_torch_input_same_numbers():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    emb, same = _planted_pairs(rng, 300, 8, 1.0)
    a = evaluate_pairs(emb, same)
    b = evaluate_pairs(torch.from_numpy(emb), torch.from_numpy(same))
    assert a.to_dict(curves=True) == b.to_dict(curves=True)


def test_bad_shapes():
    with pytest.raises(ValueError):
        evaluate_pairs(np.zeros((3, 4)), np.ones(1))
    with pytest.raises(ValueError):
        evaluate_pairs(np.ones((20, 4)), np.ones(9))


def test_cli_pairs_json_contract(tmp_path, capsys):
    import argparse
    import json

    from cdface.errors import FormatError
    from cdface.eval.cli import register

    rng = np.random.default_rng(8)
    emb, same = _planted_pairs(rng, 200, 8, 1.0)
    np.save(tmp_path / "e.npy", emb)
    np.save(tmp_path / "s.npy", same)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    argv = ["score", "pairs", "--embeddings", str(tmp_path / "e.npy"), "--issame", str(tmp_path / "s.npy"),
            "--out", str(tmp_path / "o.json")]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    text = capsys.readouterr().out
    out = json.loads(text)
    ref = evaluate_pairs(emb, same)
    assert out["accuracy"] == ref.accuracy and out["accuracy_std"] == ref.accuracy_std
    assert out["threshold"] == ref.threshold and out["val"] == ref.val and out["far"] == ref.far
    assert json.loads((tmp_path / "o.json").read_text()) == out
    args = parser.parse_args(argv)
    args.func(args)
    assert capsys.readouterr().out == text
    np.save(tmp_path / "bad.npy", same[:5])
    args = parser.parse_args(["score", "pairs", "--embeddings", str(tmp_path / "e.npy"), "--issame",
                              str(tmp_path / "bad.npy")])
    with pytest.raises(FormatError, match="bad.npy"):
        args.func(args)


def test_cli_pairs_with_flipped_embeddings_adds_xnorm(tmp_path, capsys):
    import json

    from cdface.cli import main

    rng = np.random.default_rng(9)
    emb = rng.normal(size=(120, 8)).astype(np.float32)
    flip = (emb + rng.normal(scale=0.2, size=emb.shape)).astype(np.float32)
    same = rng.random(60) < 0.5
    for name, array in (("e", emb), ("f", flip), ("s", same)):
        np.save(tmp_path / f"{name}.npy", array)
    assert main(["score", "pairs", "--embeddings", str(tmp_path / "e.npy"), "--embeddings-flip",
                 str(tmp_path / "f.npy"), "--issame", str(tmp_path / "s.npy")]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = evaluate_pairs(emb.astype(np.float64) + flip.astype(np.float64), same)
    assert out["accuracy"] == ref.accuracy and out["val"] == ref.val
    norms = [np.linalg.norm(row) for row in np.concatenate([emb, flip]).astype(np.float64)]
    assert out["xnorm"] == pytest.approx(sum(norms) / len(norms), rel=1e-12)


def test_tar_at_far_levels_follow_insightface_val_rule():
    """Every requested FAR is scored exactly as insightface's `val` is at its far_target."""
    rng = np.random.default_rng(21)
    emb, same = _planted_pairs(rng, 600, 8, 1.2)
    got = evaluate_pairs(emb, same, far_targets=(1e-1, 1e-2, 1e-3))
    for far in (1e-1, 1e-2, 1e-3):
        ref = _reference_evaluate(emb, same, far_target=far)
        assert got.tar_at_far[far] == ref["val"] and got.tar_at_far_std[far] == ref["val_std"]
    assert got.val == got.tar_at_far[1e-3]
    assert set(got.to_dict()["tar_at_far"]) == {"0.1", "0.01", "0.001"}


def test_nonfinite_embeddings_counted_and_marked_invalid():
    rng = np.random.default_rng(8)
    emb, same = _planted_pairs(rng, 60, 4, 1.0)
    emb[[0, 7]] = np.nan
    emb[9, 2] = np.inf
    got = evaluate_pairs(emb, same)
    ref = _reference_evaluate(emb, same)
    assert got.nonfinite_embeddings == 3 and not got.valid
    assert got.to_dict()["valid"] is False and got.to_dict()["nonfinite_embeddings"] == 3
    assert got.accuracy == ref["acc"]  # still the reference's numbers, only flagged


def test_cli_pairs_fewer_pairs_than_folds_is_one_line(tmp_path, capsys):
    from cdface.cli import main

    np.save(tmp_path / "e.npy", np.ones((14, 4), np.float32))
    np.save(tmp_path / "s.npy", np.ones(7, bool))
    argv = ["score", "pairs", "--embeddings", str(tmp_path / "e.npy"), "--issame", str(tmp_path / "s.npy")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "s.npy" in err and "10 pairs" in err and "got 7 pairs" in err
    assert main([*argv, "--nfolds", "7", "--far", "0.5"]) == 0
    # no impostor pair: the training FAR never reaches 0.5, so insightface's rule takes threshold 0 -> TAR 0
    assert json.loads(capsys.readouterr().out)["tar_at_far"] == {"0.5": 0.0}
