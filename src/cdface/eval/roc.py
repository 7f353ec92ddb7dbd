"""ROC exactly as ``sklearn.metrics.roc_curve(drop_intermediate=True)`` and insightface's TAR@FAR pick.

sklearn sorts the scores, keeps one point per distinct score (the counts of positives/negatives scoring
>= it), drops collinear points (second differences of both counts zero), prepends (0, 0) and divides by the
totals. Ties are therefore grouped and the order inside a tie is irrelevant, which lets us count with two
unstable sorts instead of sklearn's stable arg-sort. insightface then flips the curve and, per FAR level,
takes the point with the nearest FPR; equal distances go to the first in flipped order (the largest TPR).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cdface.eval._arrays import to_numpy

__all__ = ["roc_curve", "tar_at_far", "DEFAULT_FAR_LEVELS"]

DEFAULT_FAR_LEVELS = tuple(10**-k for k in range(6, 0, -1))  # insightface writes 10**-6 ... 10**-1


def roc_curve(
    labels: Any, scores: Any, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) equal to sklearn's ``roc_curve(labels, scores)`` (labels 1 = positive).

    With no negatives (positives) the FPR (TPR) is all-NaN, as sklearn returns it (with a warning).
    """
    y = to_numpy(labels).reshape(-1)
    s = to_numpy(scores).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if s.size == 0:
        raise ValueError("roc_curve needs at least one score")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    pos = y == 1
    s_all = np.sort(s)
    pos_sorted = np.sort(s[pos])
    starts = np.flatnonzero(np.r_[True, s_all[1:] != s_all[:-1]])
    distinct = s_all[starts]
    n_ge = s.size - starts  # how many scores are >= each distinct value
    tps = pos_sorted.size - np.searchsorted(pos_sorted, distinct, side="left")
    fps = n_ge - tps
    # descending thresholds, as sklearn returns them
    tps, fps, thresholds = tps[::-1].astype(np.int64), fps[::-1].astype(np.int64), distinct[::-1]
    if drop_intermediate and fps.size > 2:
        keep = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    tps = np.r_[0, tps].astype(np.float64)
    fps = np.r_[0, fps].astype(np.float64)
    thresholds = np.r_[np.inf, thresholds.astype(np.float64)]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far_levels: Any = DEFAULT_FAR_LEVELS) -> dict[float, float]:
    """insightface's table: flip the curve, take the TPR at the FPR nearest each level (first on ties)."""
    fpr_f = np.flipud(np.asarray(fpr, dtype=np.float64))
    tpr_f = np.flipud(np.asarray(tpr, dtype=np.float64))
    out: dict[float, float] = {}
    for level in far_levels:  # a handful of levels
        out[float(level)] = float(tpr_f[int(np.argmin(np.abs(fpr_f - level)))])
    return out
