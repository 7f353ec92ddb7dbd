"""ROC exactly as ``sklearn.metrics.roc_curve(drop_intermediate=True)`` and insightface's TAR@FAR pick.

sklearn sorts the scores, keeps one point per distinct score (the counts of positives/negatives scoring
>= it), drops collinear points (second differences of both counts zero), prepends (0, 0) and divides by the
totals. Ties are therefore grouped and the order inside a tie is irrelevant, which lets us count with one
unstable (SIMD) sort of the scores, no arg-sort. Without ties the kept points are exactly where the label
changes, found from the positives' ranks alone; with ties, positives are counted per distinct value by
binary search. insightface then flips the curve and, per FAR level, takes the point with the nearest FPR;
equal distances go to the first in flipped order (the largest TPR).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cdface.eval._arrays import to_numpy

__all__ = [
    "roc_curve", "roc_from_sorted", "roc_inputs", "far_points", "far_point_within", "tar_at_far",
    "DEFAULT_FAR_LEVELS",
]

DEFAULT_FAR_LEVELS = tuple(10**-k for k in range(6, 0, -1))  # insightface writes 10**-6 ... 10**-1


def roc_curve(
    labels: Any, scores: Any, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) equal to sklearn's ``roc_curve(labels, scores)`` (labels 1 = positive).

    With no negatives (positives) the FPR (TPR) is all-NaN, as sklearn returns it (with a warning).
    """
    y, s = roc_inputs(labels, scores)
    pos = y == 1
    s_all = np.sort(s)  # one (SIMD) sort of all scores; positives are located in it by binary search
    if not (np.isfinite(s_all[0]) and np.isfinite(s_all[-1])):  # NaN sorts last
        raise ValueError("scores must be finite")
    return roc_from_sorted(s_all, np.sort(s[pos]), drop_intermediate)


def roc_inputs(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated flat (labels, float scores), as ``roc_curve`` accepts them."""
    y = to_numpy(labels).reshape(-1)
    s = to_numpy(scores).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if s.size == 0:
        raise ValueError("roc_curve needs at least one score")
    if y.dtype != bool and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() > 1):
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("labels must be 0 or 1")
    if s.dtype.kind != "f":
        s = s.astype(np.float64)
    return y, s


def roc_from_sorted(s_all: np.ndarray, pos_sorted: np.ndarray, drop_intermediate: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``roc_curve`` from all scores sorted ascending and the positives' scores sorted ascending (finite;
    the positives' values must be a sub-multiset of ``s_all``)."""
    if s_all.size < 2 or not np.any(s_all[1:] == s_all[:-1]):
        tps, fps, thresholds = _roc_points_distinct(s_all, pos_sorted, drop_intermediate)
    else:
        tps, fps, thresholds = _roc_points_ties(s_all, pos_sorted, drop_intermediate)
    tps = np.r_[0, tps].astype(np.float64)
    fps = np.r_[0, fps].astype(np.float64)
    thresholds = np.r_[np.inf, thresholds.astype(np.float64)]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def _roc_points_distinct(s_all: np.ndarray, pos_sorted: np.ndarray, drop: bool
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All scores distinct: point j (j-th largest score) has tps_j = #positives among the top j+1 and
    fps_j = j + 1 - tps_j. Both second differences at j are +-(q[j+1] - q[j]) (q = is-positive), so sklearn
    keeps j exactly where the label changes, plus both ends: O(positives) after the sort."""
    n = s_all.size
    q = (n - 1 - np.searchsorted(s_all, pos_sorted))[::-1]  # descending ranks of the positives (sorted)
    if drop and n > 2:
        cand = np.unique(np.r_[q, q - 1])
        cand = cand[(cand >= 1) & (cand <= n - 2)]
        is_pos = _member(q, cand)
        next_pos = _member(q, cand + 1)
        keep = np.unique(np.r_[0, cand[is_pos != next_pos], n - 1])
    else:
        keep = np.arange(n)
    tps = np.searchsorted(q, keep, side="right").astype(np.int64)
    fps = keep + 1 - tps
    return tps, fps, s_all[n - 1 - keep]


def _member(sorted_set: np.ndarray, values: np.ndarray) -> np.ndarray:
    i = np.minimum(np.searchsorted(sorted_set, values), max(sorted_set.size - 1, 0))
    return (sorted_set[i] == values) if sorted_set.size else np.zeros(values.shape, bool)


def _roc_points_ties(s_all: np.ndarray, pos_sorted: np.ndarray, drop: bool
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """General case: one point per distinct score (ties grouped). With per-group positive/negative counts
    (p_g, n_g), both second differences at a point are the changes of (p, n) between its neighbouring
    groups, so sklearn keeps a point exactly where (p, n) changes; counts at kept points come from the
    sorted positives' group indices by binary search."""
    n = s_all.size
    starts = np.flatnonzero(np.r_[True, s_all[1:] != s_all[:-1]])
    n_groups = starts.size
    pos_group = np.searchsorted(s_all[starts], pos_sorted)  # ascending group index of each positive, sorted
    if drop and n_groups > 2:
        sizes = np.diff(starts, append=n)
        p_cnt = np.bincount(pos_group, minlength=n_groups)
        n_cnt = sizes - p_cnt
        change = (n_cnt[1:] != n_cnt[:-1]) | (p_cnt[1:] != p_cnt[:-1])  # change[g - 1]: groups g - 1 -> g
        keep = np.r_[0, np.flatnonzero(change[:n_groups - 2]) + 1, n_groups - 1]
    else:
        keep = np.arange(n_groups)
    keep = keep[::-1]  # descending thresholds, as sklearn returns them
    tps = (pos_sorted.size - np.searchsorted(pos_group, keep, side="left")).astype(np.int64)
    fps = (n - starts[keep]) - tps
    return tps, fps, s_all[starts[keep]]


def far_points(fpr: np.ndarray, far_levels: Any = DEFAULT_FAR_LEVELS) -> np.ndarray:
    """Index (in ``fpr``'s order) of the point insightface picks per level: flip the curve, take the FPR
    nearest the level, the first in flipped order on ties (i.e. the last in ``fpr``'s order)."""
    fpr_f = np.flipud(np.asarray(fpr, dtype=np.float64))
    last = fpr_f.size - 1
    return np.array([last - int(np.argmin(np.abs(fpr_f - level))) for level in far_levels], dtype=np.int64)


def far_point_within(fpr: np.ndarray, a: int, b: int, level: float) -> int | None:
    """The point ``far_points`` picks for ``level`` among ``fpr[a:b + 1]``, when that pick is certain
    whatever the curve holds outside [a, b] (FPR is non-decreasing along the curve); else None.

    This is the locality of the nearest-FPR rule (the fast IJB path's exactness rests on it): a point before
    a is no nearer than a when fpr[a] <= level, and loses ties (the last one wins); a point after b is
    strictly farther than the pick when fpr[b] - level exceeds the pick's distance. Change it with
    ``far_points``.
    """
    k = a + int(far_points(fpr[a:b + 1], [level])[0])
    distance = abs(float(fpr[k]) - level)
    before_ok = a == 0 or fpr[a] <= level
    after_ok = b == fpr.size - 1 or fpr[b] - level > distance
    return k if before_ok and after_ok else None


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far_levels: Any = DEFAULT_FAR_LEVELS) -> dict[float, float]:
    """insightface's table: flip the curve, take the TPR at the FPR nearest each level (first on ties)."""
    levels = list(far_levels)  # a handful of levels
    picks = far_points(fpr, levels)
    tpr = np.asarray(tpr, dtype=np.float64)
    return {float(level): float(tpr[k]) for level, k in zip(levels, picks)}
