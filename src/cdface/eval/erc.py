"""Error-versus-reject (ERC): FNMR at a fixed FMR as the lowest-quality comparisons are discarded.

Quality assessment as MagFace (``eval/eval_quality/eval_quality.py``) evaluates it, whose definitions are used
here: a pair's quality is the lower of its two images' qualities (MagFace: the feature magnitudes); pairs are
ordered by ``np.argsort(quality)`` and, for a rejection fraction ``r``, the first ``int(r * M)`` are dropped; the
comparison score is the angular distance ``arccos(clip(cos, -1, 1)) / pi`` (float64), a pair matches when its
distance is below the threshold; the threshold for FMR ``10**-j`` is the impostor distance of (0-based) index
``(N_imp - 1) // 10**j`` in ascending order (the reference divides the index by 10 j times), and
FNMR = #(genuine with distance >= threshold) / #genuine. The default rejection grid is MagFace's
``np.arange(0, 0.98, 0.05)``.

Threshold: ``threshold="fixed"`` (default) sets it once, on all pairs, and keeps it while pairs are rejected:
the ERC of Grother & Tabassi (NIST) that quality papers plot, where a good quality measure lowers FNMR at an
unchanged operating point. ``threshold="per_rate"`` re-derives it from the impostors that remain at each
rejection fraction, which is what MagFace's script does literally (its FMR then stays ~1e-3 throughout; with
100 impostors or fewer left its index walk reaches 0 first and records nothing: NaN here).

AUC: the trapezoidal area under FNMR over the rejection fraction (fraction units, on the grid used).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cdface.eval._arrays import far_key, plain_float, to_numpy

__all__ = ["ErcResult", "error_versus_reject", "ijb_error_versus_reject", "pair_angular_distances", "fmr_index",
           "DEFAULT_REJECT", "THRESHOLD_MODES"]

DEFAULT_REJECT = tuple(float(r) for r in np.arange(0, 0.98, 0.05))  # MagFace's grid: 0, 0.05, ..., 0.95
THRESHOLD_MODES = ("fixed", "per_rate")


@dataclass(frozen=True)
class ErcResult:
    """FNMR per rejection fraction for each FMR level (fractions in [0, 1])."""

    reject: np.ndarray  # (R,) rejection fractions
    fnmr: dict[float, np.ndarray]  # FMR -> (R,) FNMR; NaN where no genuine pair is left
    fmr_obtained: dict[float, np.ndarray]  # FMR -> (R,) impostors accepted / impostors left
    thresholds: dict[float, np.ndarray]  # FMR -> (R,) distance thresholds (constant for "fixed")
    auc: dict[float, float]  # FMR -> trapezoidal area under FNMR(reject)
    threshold_mode: str
    num_pairs: int
    num_genuine: int
    num_impostor: int
    quality_range: tuple[float, float] = field(default=(math.nan, math.nan))

    def to_dict(self, curves: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "auc": {far_key(f): plain_float(v) for f, v in self.auc.items()},
            "fnmr_at_no_reject": {far_key(f): plain_float(v[0]) for f, v in self.fnmr.items()},
            "threshold_mode": self.threshold_mode,
            "num_pairs": int(self.num_pairs),
            "num_genuine": int(self.num_genuine),
            "num_impostor": int(self.num_impostor),
            "quality_range": [plain_float(v) for v in self.quality_range],
        }
        if curves:
            out["reject"] = [plain_float(v) for v in self.reject]
            out["fnmr"] = {far_key(f): [plain_float(x) for x in v] for f, v in self.fnmr.items()}
            out["fmr_obtained"] = {far_key(f): [plain_float(x) for x in v] for f, v in self.fmr_obtained.items()}
            out["thresholds"] = {far_key(f): [plain_float(x) for x in v] for f, v in self.thresholds.items()}
        return out


def pair_angular_distances(features: Any, pairs: Any) -> np.ndarray:
    """``arccos(clip(cos(a, b), -1, 1)) / pi`` per pair in float64, as MagFace's ``distance_``.

    ``features`` (N, D); ``pairs`` (M, 2) row indices. Raises ValueError on bad shapes or indices.
    """
    x = to_numpy(features, np.float64)
    idx = to_numpy(pairs).astype(np.int64, copy=False)
    if x.ndim != 2 or idx.ndim != 2 or idx.shape[1] != 2:
        raise ValueError(f"features (N, D) and pairs (M, 2) expected, got {x.shape} and {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[0]):
        raise ValueError(f"pair indices must be in [0, {x.shape[0]})")
    out = np.empty(idx.shape[0], dtype=np.float64)
    step = 65536
    for s in range(0, idx.shape[0], step):  # chunks of pairs bound the memory of the gathered rows
        a, b = x[idx[s:s + step, 0]], x[idx[s:s + step, 1]]
        dot = np.sum(np.multiply(a, b), axis=1)
        norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        out[s:s + step] = np.arccos(np.clip(dot / norm, -1.0, 1.0)) / math.pi
    return out


def fmr_index(num_impostor: int, fmr: float) -> int:
    """0-based index of the threshold among ascending impostor distances: ``(N - 1) // 10**j`` for FMR
    ``10**-j`` (MagFace's repeated integer division), ``floor((N - 1) * fmr)`` for any other level."""
    inverse = 1.0 / fmr
    if abs(inverse - round(inverse)) < 1e-9 * inverse:
        return (num_impostor - 1) // int(round(inverse))
    return int(math.floor((num_impostor - 1) * fmr))


def error_versus_reject(
    features: Any,
    pairs: Any,
    issame: Any,
    quality: Any,
    fmr_levels: Sequence[float] = (1e-3,),
    reject_fractions: Sequence[float] | None = None,
    threshold: str = "fixed",
    distances: Any = None,
) -> ErcResult:
    """ERC of a pair set: ``features`` (N, D) per image, ``pairs`` (M, 2) rows, ``issame`` (M,) genuine flags,
    ``quality`` (N,) per image (higher = better; MagFace uses the feature norm).

    ``distances`` (M,) may replace the features (then ``features`` may be None), e.g. template-pair scores
    converted to angular distance. Raises ValueError on mismatched shapes, an unknown ``threshold`` mode, a
    non-finite quality, or a pair set without genuine or impostor pairs.
    """
    if threshold not in THRESHOLD_MODES:
        raise ValueError(f"threshold must be one of {THRESHOLD_MODES}, got {threshold!r}")
    idx = to_numpy(pairs).astype(np.int64, copy=False).reshape(-1, 2)
    dist = pair_angular_distances(features, idx) if distances is None else to_numpy(distances, np.float64)
    same = to_numpy(issame).astype(bool).reshape(-1)
    q_img = to_numpy(quality, np.float64).reshape(-1)
    if dist.shape[0] != idx.shape[0] or same.shape[0] != idx.shape[0]:
        raise ValueError(f"{idx.shape[0]} pairs, {dist.shape[0]} distances and {same.shape[0]} genuine flags")
    if idx.size and idx.max() >= q_img.shape[0]:
        raise ValueError(f"quality has {q_img.shape[0]} entries, pairs index row {idx.max()}")
    if not np.all(np.isfinite(q_img)):
        raise ValueError("quality values must be finite")
    n = idx.shape[0]
    n_gen, n_imp = int(same.sum()), int((~same).sum())
    if n_gen == 0 or n_imp == 0:
        raise ValueError(f"ERC needs genuine and impostor pairs, got {n_gen} and {n_imp}")
    reject = np.asarray(DEFAULT_REJECT if reject_fractions is None else list(reject_fractions), dtype=np.float64)
    if np.any(reject < 0) or np.any(reject >= 1):
        raise ValueError("rejection fractions must be in [0, 1)")
    q_pair = np.minimum(q_img[idx[:, 0]], q_img[idx[:, 1]])
    order = np.argsort(q_pair)  # the reference's call (ties ordered as it orders them)
    cuts = np.array([int(r * n) for r in reject], dtype=np.int64)  # MagFace: int(u_rate * num_pairs)

    d_sorted, g_sorted = dist[order], same[order]
    # pairs kept at cut c are order[c:]; counts over them per cut
    gen_left = _suffix_counts(g_sorted, cuts)
    imp_left = (n - cuts) - gen_left
    imp_all = dist[~same]
    fnmr: dict[float, np.ndarray] = {}
    fmr_got: dict[float, np.ndarray] = {}
    ths: dict[float, np.ndarray] = {}
    for level in fmr_levels:  # a handful of FMR levels
        if threshold == "fixed":
            k = fmr_index(n_imp, float(level))
            t = np.partition(imp_all, k)[k]  # the k-th smallest impostor distance, without a full sort
            th = np.full(cuts.size, t)
            miss = g_sorted & (d_sorted >= t)
            fa = ~g_sorted & (d_sorted < t)
            miss_left = _suffix_counts(miss, cuts)
            fa_left = _suffix_counts(fa, cuts)
        else:
            th = np.empty(cuts.size)
            miss_left = np.empty(cuts.size, dtype=np.int64)
            fa_left = np.empty(cuts.size, dtype=np.int64)
            for j, c in enumerate(cuts):  # one partition per rejection fraction (~20)
                d_kept, g_kept = d_sorted[c:], g_sorted[c:]
                imp = d_kept[~g_kept]
                # the reference's index walk stops at index 0 before reaching the level (records nothing)
                if imp.size == 0 or imp.size * 10 * float(level) <= 1:
                    th[j], miss_left[j], fa_left[j] = np.nan, 0, 0
                    continue
                k = fmr_index(imp.size, float(level))
                th[j] = np.partition(imp, k)[k]
                miss_left[j] = int(np.count_nonzero(d_kept[g_kept] >= th[j]))
                fa_left[j] = int(np.count_nonzero(imp < th[j]))
        gl, il = np.asarray(gen_left, np.float64), np.asarray(imp_left, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(gl > 0, miss_left / gl, np.nan)
            fm = np.where(il > 0, fa_left / il, np.nan)
        if threshold == "per_rate":
            f = np.where(np.isnan(th), np.nan, f)
        fnmr[float(level)], fmr_got[float(level)], ths[float(level)] = f, fm, th
    auc = {lvl: _trapezoid(reject, f) for lvl, f in fnmr.items()}
    return ErcResult(reject, fnmr, fmr_got, ths, auc, threshold, n, n_gen, n_imp,
                     (float(q_img.min()), float(q_img.max())))


def ijb_error_versus_reject(
    features: Any,
    faceness: Any,
    templates: Any,
    medias: Any,
    pairs: Any,
    labels: Any,
    quality: Any,
    use_norm_score: bool = True,
    use_detector_score: bool = True,
    **kwargs: Any,
) -> ErcResult:
    """ERC of IJB 1:1 template pairs: the template-pair cosines of ``ijb_11.py`` (`cdface.eval.ijb`, TestMode N1 D1
    F1 by default) as angular distances; a template's quality is the mean of its images' ``quality`` (M,)
    (cdface's choice: MagFace defines ERC on image pairs only), a pair's the lower of its two templates'.
    ``kwargs`` go to `error_versus_reject` (fmr_levels, reject_fractions, threshold)."""
    from cdface.eval.ijb import image_features, pair_scores, template_features

    q_img = to_numpy(quality, np.float64).reshape(-1)
    t_ids = to_numpy(templates).astype(np.int64).reshape(-1)
    if q_img.shape[0] != t_ids.shape[0]:
        raise ValueError(f"{t_ids.shape[0]} images but {q_img.shape[0]} qualities")
    img = image_features(features, faceness, use_norm_score=use_norm_score, use_detector_score=use_detector_score)
    unique, tfeat = template_features(img, t_ids, medias)
    scores = pair_scores(tfeat, unique, pairs)
    distances = np.arccos(np.clip(scores, -1.0, 1.0)) / math.pi
    rows = np.searchsorted(unique, t_ids)
    t_quality = np.bincount(rows, weights=q_img, minlength=unique.size) / np.maximum(
        np.bincount(rows, minlength=unique.size), 1)
    pair_rows = np.searchsorted(unique, to_numpy(pairs).astype(np.int64).reshape(-1, 2))
    return error_versus_reject(None, pair_rows, labels, t_quality, distances=distances, **kwargs)


def _suffix_counts(mask: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """``count_nonzero(mask[c:])`` for each cut c: one count per segment between the sorted cuts (~20),
    summed from the end, instead of a cumulative sum over millions of pairs."""
    starts = np.unique(cuts)
    bounds = np.r_[starts, mask.size]
    seg = np.array([np.count_nonzero(mask[a:b]) for a, b in zip(bounds[:-1], bounds[1:])], dtype=np.int64)
    suffix = np.cumsum(seg[::-1])[::-1]
    return suffix[np.searchsorted(starts, cuts)]


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(y)
    if keep.sum() < 2:
        return math.nan
    x, y = x[keep], y[keep]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
