"""Pick each selected class's easy and hard samples from their difficulty scores.

Follows the paper's repository: the threshold t is the p-quantile of the scores (target cosines; high =
easy). Easy samples are a class's samples with score in the open window (t, 1), hard ones in (0, t).
When a class has too few in its window, the window widens by ``widen_step`` on both sides until it has
enough; when even a window holding every sample of the class is too small, samples repeat (each one
floor(n / m) times, a random subset once more). Otherwise samples are drawn without replacement. Easy
and hard are drawn independently, so after widening one sample may appear in both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def score_threshold(
    scores: np.ndarray, p: float = 0.2, max_samples: int = 100_000, rng: np.random.Generator | None = None
) -> float:
    """The p-quantile of ``scores``: the element at sorted position int(n * p) (no interpolation).

    When there are more than ``max_samples`` scores, a uniform random subsample of that size (drawn with
    replacement, as the reference) stands in for them.
    """
    scores = np.asarray(scores).reshape(-1)
    if scores.size == 0:
        raise ValueError("score_threshold needs at least one score")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if scores.size > max_samples:
        rng = rng if rng is not None else np.random.default_rng()
        scores = scores[rng.integers(0, scores.size, size=max_samples)]
    k = min(int(scores.size * p), scores.size - 1)
    return float(np.partition(scores, k)[k])


def draw_in_window(
    indices: np.ndarray,
    scores: np.ndarray,
    low: float,
    high: float,
    n: int,
    rng: np.random.Generator,
    widen_step: float = 0.05,
) -> np.ndarray:
    """``n`` of ``indices`` whose ``scores`` lie in (low, high), widening the window until enough do.

    Non-finite scores never fall in a window; if no score is finite, every sample is a candidate.
    """
    if indices.size == 0:
        raise ValueError("a selected class has no samples")
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    finite = np.isfinite(scores)
    if not finite.any():
        return _draw(indices.astype(np.int64, copy=False), n, rng)
    smallest, largest = float(scores[finite].min()), float(scores[finite].max())
    widen = 0
    while True:
        lo, hi = low - widen * widen_step, high + widen * widen_step
        inside = (scores > lo) & (scores < hi)
        count = int(inside.sum())
        covers_all = lo < smallest and hi > largest
        if count >= n or covers_all:
            break
        widen += 1
    return _draw(indices[inside].astype(np.int64, copy=False), n, rng)


def _draw(candidates: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n of the candidates without replacement, or, if too few, each floor(n/m) times plus a subset."""
    count = candidates.size
    if count >= n:
        return rng.choice(candidates, size=n, replace=False)
    whole, rest = divmod(n, count)
    drawn = np.concatenate([np.tile(candidates, whole), rng.choice(candidates, size=rest, replace=False)])
    return rng.permutation(drawn)


class EasyHardMiner:
    """(scores, classes, threshold) -> easy (K, NE) and hard (K, NH) sample indices."""

    def __init__(self, num_easy: int = 7, num_hard: int = 1, widen_step: float = 0.05) -> None:
        if num_easy < 0 or num_hard < 0:
            raise ValueError("num_easy and num_hard must be >= 0")
        if widen_step <= 0:
            raise ValueError("widen_step must be > 0")
        self.num_easy = num_easy
        self.num_hard = num_hard
        self.widen_step = widen_step

    def __call__(
        self,
        scores: np.ndarray,
        class_to_indices: Sequence[np.ndarray],
        classes: np.ndarray,
        threshold: float,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        easy = np.empty((classes.size, self.num_easy), dtype=np.int64)
        hard = np.empty((classes.size, self.num_hard), dtype=np.int64)
        step = self.widen_step
        for row, cls in enumerate(classes):
            members = np.asarray(class_to_indices[cls], dtype=np.int64)
            member_scores = scores[members]
            easy[row] = draw_in_window(members, member_scores, threshold, 1.0, self.num_easy, rng, step)
            hard[row] = draw_in_window(members, member_scores, 0.0, threshold, self.num_hard, rng, step)
        return easy, hard
