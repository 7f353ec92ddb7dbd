"""The cosine threshold at a chosen false accept rate (FAR), read off a pair set's verification ROC.

The ROC is the one the field reports TAR@FAR from (insightface's IJB scripts, and `cdface.eval.roc`):
``sklearn.metrics.roc_curve(labels, scores)`` over all pairs, "same" when ``score >= threshold``. Here it is
taken with every distinct score as a point (``drop_intermediate=False``) and the rule is:

    the lowest ROC threshold whose FAR is <= the target FAR,

i.e. the most permissive cut-off that still accepts no more than ``far x impostors`` impostor pairs of the
calibration set; its TAR is the largest TAR at FAR <= target. A decision made with it is
``cosine >= threshold`` (inclusive, as sklearn's thresholds are). insightface's own TAR@FAR table takes the
point with the *nearest* FAR instead (`cdface.eval.roc.far_points`), which may lie above the target: a
threshold a user relies on must not.

A FAR below ``1 / impostors`` cannot be measured on the set (it would mean "no impostor above the
threshold", the same as FAR 0): it is refused, naming the set and its number of impostor pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cdface.errors import ConfigError

__all__ = ["FarThreshold", "threshold_at_far", "check_far_measurable", "far_threshold_table", "STANDARD_FARS"]

STANDARD_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # the levels results.json stores a threshold for


@dataclass(frozen=True)
class FarThreshold:
    """`cosine`: "same" when cosine >= it; `far` / `tar`: what it gives on the calibration set (fractions);
    `far_target`: the FAR asked for; `impostors` / `genuines`: pair counts of the set; `set_name`: which set."""

    far_target: float
    cosine: float
    far: float
    tar: float
    impostors: int
    genuines: int
    set_name: str = ""

    def describe(self) -> str:
        """One sentence for the user: the rule, the set and what the threshold gives there."""
        return (f"FAR {self.far_target:g} on {self.set_name or 'the calibration set'} ({self.impostors} impostor, "
                f"{self.genuines} genuine pairs): the lowest ROC threshold with FAR <= {self.far_target:g}, "
                f"same when cos >= {self.cosine:.6f} (there: FAR {self.far:.3g}, TAR {self.tar:.4f})")

    def to_dict(self) -> dict[str, Any]:
        return {"far_target": self.far_target, "cosine": self.cosine, "far": self.far, "tar": self.tar,
                "impostor_pairs": self.impostors, "genuine_pairs": self.genuines}


def _curve(issame: Any, cosine: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    from cdface.eval.roc import roc_curve

    same = np.asarray(issame, dtype=bool).reshape(-1)
    scores = np.asarray(cosine, dtype=np.float64).reshape(-1)
    if same.shape != scores.shape:
        raise ValueError(f"issame {same.shape} and cosine {scores.shape} differ in length")
    if not np.isfinite(scores).all():
        raise ConfigError("the calibration pairs have non-finite similarities (NaN/inf embeddings)")
    impostors, genuines = int((~same).sum()), int(same.sum())
    if impostors == 0 or genuines == 0:
        raise ConfigError(f"a FAR threshold needs genuine and impostor pairs; the set has {genuines} genuine and "
                          f"{impostors} impostor pairs")
    fpr, tpr, thresholds = roc_curve(same, scores, drop_intermediate=False)
    return fpr, tpr, thresholds, impostors, genuines


def _pick(fpr: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the last ROC point (lowest threshold) with fpr <= level, per level (fpr is non-decreasing)."""
    return np.searchsorted(fpr, levels, side="right") - 1


def check_far_measurable(far: float, impostors: int, set_name: str) -> None:
    """ConfigError (one line) when `far` is below 1 / `impostors`: no ROC point of the set can show it."""
    if far * impostors < 1.0 - 1e-9:
        lowest = 1.0 / max(impostors, 1)
        raise ConfigError(f"FAR {far:g} needs at least {math.ceil(1.0 / far - 1e-9)} impostor pairs; {set_name} has "
                          f"{impostors} (the lowest FAR it can calibrate is 1/{impostors} = {lowest:.3g})")


def threshold_at_far(issame: Any, cosine: Any, far: float, set_name: str = "") -> FarThreshold:
    """The cosine threshold at FAR <= `far` on pairs (`issame` (P,) bool, `cosine` (P,) similarities).

    ConfigError (one line) when `far` is below 1 / impostor pairs, when the set lacks genuine or impostor
    pairs, or when no threshold reaches it (impostors tied at the highest score).
    """
    far = float(far)
    if not 0.0 < far <= 1.0:
        raise ConfigError(f"--far is a false accept rate in (0, 1], got {far:g}")
    fpr, tpr, thresholds, impostors, genuines = _curve(issame, cosine)
    name = set_name or "the calibration set"
    check_far_measurable(far, impostors, name)
    k = int(_pick(fpr, np.array([far]))[0])
    if k <= 0:  # only the (0, 0) start point: impostors tie at the highest score
        raise ConfigError(f"no threshold of {name} gives FAR <= {far:g}: more impostors than that tie at its "
                          "highest similarity")
    return FarThreshold(far, float(thresholds[k]), float(fpr[k]), float(tpr[k]), impostors, genuines, set_name)


def far_threshold_table(issame: Any, cosine: Any, levels: Any = STANDARD_FARS) -> dict[str, Any]:
    """For results.json: ``{"rule", "impostor_pairs", "genuine_pairs", "levels": {far_key: {"cosine", "far",
    "tar"} | None}}``; a level below 1 / impostors (or unreachable) is None. Empty when the set lacks a class
    or holds non-finite similarities."""
    from cdface.eval._arrays import far_key, plain_float

    try:
        fpr, tpr, thresholds, impostors, genuines = _curve(issame, cosine)
    except ConfigError:
        return {}
    levels = np.array(sorted({float(f) for f in levels}), dtype=np.float64)
    picks = _pick(fpr, levels)
    table: dict[str, Any] = {}
    for level, k in zip(levels.tolist(), picks.tolist()):  # a handful of levels
        reachable = level * impostors >= 1.0 - 1e-9 and k > 0
        table[far_key(level)] = (
            {"cosine": plain_float(thresholds[k]), "far": plain_float(fpr[k]), "tar": plain_float(tpr[k])}
            if reachable else None
        )
    return {"rule": "lowest ROC threshold (sklearn roc_curve, all pairs) with FAR <= level; same when cos >= "
                    "cosine", "impostor_pairs": impostors, "genuine_pairs": genuines, "levels": table}
