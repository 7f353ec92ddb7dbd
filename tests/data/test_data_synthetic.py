"""Synthetic face benchmark: determinism, disjoint identities, file layout, identity signal."""

from __future__ import annotations

import numpy as np

from cdface.data.datasets import RecordIODataset
from cdface.data.pairs_bin import decode_pairs, load_bin
from cdface.data.synthetic import build_synthetic_benchmark, make_identities, render_images, render_set


def test_identities_depend_only_on_seed_and_number():
    big = make_identities(10, seed=3)
    tail = make_identities(4, seed=3, first_id=6)
    assert tail.ids.tolist() == [6, 7, 8, 9]
    for key, value in tail.traits.items():
        np.testing.assert_array_equal(value, big.traits[key][6:])
    other = make_identities(10, seed=4)
    assert not np.array_equal(other.traits["skin"], big.traits["skin"])


def test_render_is_deterministic_and_batch_independent():
    ids = make_identities(3, seed=1)
    images, labels = render_set(ids, 4, seed=1)
    assert images.shape == (12, 112, 112, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    again = render_images(ids, labels[::-1], np.tile(np.arange(4), 3)[::-1], seed=1, batch_size=5)
    np.testing.assert_array_equal(again, images[::-1])
    assert len({im.tobytes() for im in images}) == 12


def test_same_identity_images_are_closer_than_different():
    ids = make_identities(12, seed=0)
    images, labels = render_set(ids, 6, seed=0, hard_fraction=0.0)
    # a crude descriptor: a 14x14 grey thumbnail of the central face region, standardised
    grey = images[:, 28:98, 21:91].astype(np.float32).mean(-1).reshape(-1, 14, 5, 14, 5).mean((2, 4))
    feats = grey.reshape(len(images), -1)
    feats = (feats - feats.mean(1, keepdims=True)) / feats.std(1, keepdims=True)
    dist = ((feats[:, None] - feats[None]) ** 2).mean(-1)
    same = labels[:, None] == labels[None]
    off_diag = ~np.eye(len(images), dtype=bool)
    assert dist[same & off_diag].mean() < 0.8 * dist[~same].mean()


def test_build_benchmark_files_deterministic_and_disjoint(tmp_path):
    kwargs = dict(num_train_ids=6, images_per_id=3, num_eval_ids=5, num_pairs=40, seed=11)
    a = build_synthetic_benchmark(tmp_path / "a", **kwargs)
    b = build_synthetic_benchmark(tmp_path / "b", **kwargs)
    for key in ("rec", "idx", "property", "bin", "manifest"):
        assert a[key].read_bytes() == b[key].read_bytes(), key
    ds = RecordIODataset(a["rec"].parent)
    assert len(ds) == 18 and ds.num_classes == 6
    pairs = load_bin(a["bin"])
    assert len(pairs) == 40
    folds = pairs.issame.reshape(10, 4)
    assert folds[:, :2].all() and not folds[:, 2:].any()
    assert decode_pairs(pairs).shape == (80, 112, 112, 3)
    import json

    manifest = json.loads(a["manifest"].read_text())
    train_range, eval_range = manifest["train_identities"], manifest["eval_identities"]
    assert train_range == [0, 6] and eval_range == [6, 11]
    train_traits = make_identities(6, 11).traits["skin"]
    eval_traits = make_identities(5, 11, first_id=6).traits["skin"]
    assert not (train_traits[:, None] == eval_traits[None]).all(-1).any()
    c = build_synthetic_benchmark(tmp_path / "c", **{**kwargs, "seed": 12})
    assert c["rec"].read_bytes() != a["rec"].read_bytes()
