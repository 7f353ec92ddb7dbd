"""EasyHardMiner and score_threshold: windows, minimal widening, repetition, no duplicates."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from cdface.miners import EasyHardMiner, draw_in_window, score_threshold


def test_threshold_is_the_sorted_element_at_int_np() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(1001).astype(np.float32)
    for p in (0.0, 0.2, 0.5, 0.999, 1.0):
        k = min(int(1001 * p), 1000)
        assert score_threshold(scores, p=p) == pytest.approx(float(np.sort(scores)[k]))


def test_threshold_subsamples_large_inputs() -> None:
    scores = np.random.default_rng(1).random(300_000)
    t1 = score_threshold(scores, p=0.2, max_samples=20_000, rng=np.random.default_rng(5))
    t2 = score_threshold(scores, p=0.2, max_samples=20_000, rng=np.random.default_rng(5))
    assert t1 == t2 and t1 in set(scores.tolist())
    assert abs(t1 - 0.2) < 0.02
    with pytest.raises(ValueError):
        score_threshold(np.array([]), p=0.2)


def _windowed_reference(scores: np.ndarray, low: float, high: float, n: int, step: float) -> set[int]:
    """Positions eligible after the smallest widening that has n candidates (slow, obvious loop)."""
    widen = 0
    while True:
        lo, hi = low - widen * step, high + widen * step
        inside = {i for i, s in enumerate(scores) if lo < s < hi}
        if len(inside) >= n or (lo < scores.min() and hi > scores.max()):
            return inside
        widen += 1


def test_draws_respect_threshold_without_duplicates() -> None:
    rng = np.random.default_rng(2)
    scores = rng.random(400)
    labels = np.repeat(np.arange(10), 40)
    class_to_indices = [np.flatnonzero(labels == c) for c in range(10)]
    classes = np.array([7, 2, 5])
    t = 0.4
    easy, hard = EasyHardMiner(num_easy=7, num_hard=3)(scores, class_to_indices, classes, t, rng)
    assert easy.shape == (3, 7) and hard.shape == (3, 3)
    assert easy.dtype == np.int64 and hard.dtype == np.int64
    for row, cls in enumerate(classes):
        assert (labels[easy[row]] == cls).all() and (labels[hard[row]] == cls).all()
        assert ((scores[easy[row]] > t) & (scores[easy[row]] < 1)).all()
        assert ((scores[hard[row]] > 0) & (scores[hard[row]] < t)).all()
        assert len(set(easy[row])) == 7 and len(set(hard[row])) == 3


def test_widening_is_minimal() -> None:
    scores = np.array([0.90, 0.80, 0.47, 0.46, 0.42, 0.10, 0.30, 0.20])
    members = np.arange(100, 108)
    eligible = _windowed_reference(scores, 0.5, 1.0, 4, 0.05)
    assert eligible == {0, 1, 2, 3}
    seen: set[int] = set()
    for seed in range(30):
        drawn = draw_in_window(members, scores, 0.5, 1.0, 4, np.random.default_rng(seed))
        assert len(set(drawn)) == 4
        seen |= set(drawn.tolist())
    assert seen == {100, 101, 102, 103}


def test_widening_reaches_negative_scores() -> None:
    scores = np.array([-0.5, -0.41, 0.9, 0.8])
    drawn = draw_in_window(np.arange(4), scores, 0.0, 0.3, 1, np.random.default_rng(0))
    assert drawn.tolist() == [1]
    assert _windowed_reference(scores, 0.0, 0.3, 1, 0.05) == {1}


def test_repetition_when_class_is_too_small() -> None:
    scores = np.array([0.1, 0.5, 0.95])
    for seed in range(5):
        drawn = draw_in_window(np.array([10, 11, 12]), scores, 0.3, 1.0, 7, np.random.default_rng(seed))
        counts = Counter(drawn.tolist())
        assert set(counts) == {10, 11, 12}
        assert sorted(counts.values()) == [2, 2, 3]


def test_random_windows_match_reference_loop() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        size = int(rng.integers(1, 12))
        scores = rng.uniform(-0.3, 1.0, size)
        low, high = sorted(rng.uniform(-0.2, 1.0, 2))
        n = int(rng.integers(1, 8))
        drawn = draw_in_window(np.arange(size), scores, low, high, n, rng)
        eligible = _windowed_reference(scores, low, high, n, 0.05)
        assert set(drawn.tolist()) <= eligible and len(drawn) == n
        if len(eligible) >= n:
            assert len(set(drawn.tolist())) == n
        else:
            assert set(drawn.tolist()) == eligible


def test_non_finite_scores_and_determinism() -> None:
    scores = np.array([np.nan, 0.9, np.nan, 0.8])
    drawn = draw_in_window(np.arange(4), scores, 0.5, 1.0, 2, np.random.default_rng(0))
    assert set(drawn.tolist()) == {1, 3}
    all_nan = draw_in_window(np.arange(3), np.full(3, np.nan), 0.5, 1.0, 2, np.random.default_rng(0))
    assert len(set(all_nan.tolist())) == 2
    miner = EasyHardMiner(num_easy=3, num_hard=1)
    args = (np.random.default_rng(9).random(50), [np.arange(50)], np.array([0]), 0.5)
    a = miner(*args, np.random.default_rng(4))
    b = miner(*args, np.random.default_rng(4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
