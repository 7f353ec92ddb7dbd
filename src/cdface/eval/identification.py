"""Closed- and open-set 1:N identification of probes in a labelled gallery (TinyFace and any probe/gallery set).

The definitions are those of ``DIR_FAR`` in AdaFace's ``validation_lq/tinyface_helper.py`` (borrowed there from
PFE), which AdaFace and CVLface report on TinyFace:

- scores are inner products of L2-normalised features (cosines, float32);
- a probe is *mated* when the gallery holds an entry with its label; gallery entries with a negative label are
  distractors (AdaFace labels TinyFace's ``Gallery_Distractor`` images -100);
- closed set (CMC): over mated probes, the fraction whose first mate is among the ``r`` highest-scoring
  gallery entries (``np.argsort(row)[::-1]``; exact ties are ordered as that call orders them);
- open set: thresholds from the non-mated probes' top scores sorted descending, ``k = round(N_nm * FPIR)``
  false alarms allowed (``np.round``, half to even): threshold = the k-th top score, or the highest one
  + 1e-5 when k = 0; DIR(FPIR, r) = fraction of mated probes with the first mate within rank ``r`` *and* a
  mate score >= the threshold. AdaFace requires one mate per probe here; with several, the best mate's score
  is used. The FPIR actually obtained (non-mated probes with a top score >= threshold) is reported too.

AdaFace stores the rates as float32 means; the rates here are the same counts divided in float64
(``np.float32(rate)`` equals AdaFace's value). The ranking streams over the gallery (``cdface.eval.ranking``),
so 3,728 TinyFace probes x 157k gallery images never need a 2.3 GB score matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cdface.eval._arrays import far_key, plain_float
from cdface.eval.ranking import mated_ranks

__all__ = ["IdentificationResult", "identification", "DEFAULT_RANKS", "fpir_thresholds"]

DEFAULT_RANKS = (1, 5, 20)  # AdaFace's TinyFace table
_EPSILON = 1e-5  # PFE's find_thresholds_by_FAR: above the highest non-mated score when no false alarm is allowed


@dataclass(frozen=True)
class IdentificationResult:
    """CMC over mated probes and DIR at each FPIR (fractions in [0, 1])."""

    cmc: dict[int, float]  # rank -> closed-set identification rate
    hits: dict[int, int]  # rank -> mated probes identified within that rank
    dir_at_fpir: dict[float, dict[int, float]]  # FPIR -> rank -> detection and identification rate
    fpir_obtained: dict[float, float]  # FPIR -> the FPIR the threshold actually gives
    thresholds: dict[float, float]  # FPIR -> score threshold
    num_mated: int
    num_nonmated: int
    num_gallery: int
    num_distractors: int
    cmc_curve: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))  # rates at ranks 1..max

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cmc": {str(k): plain_float(v) for k, v in self.cmc.items()},
            "hits": {str(k): int(v) for k, v in self.hits.items()},
            **{f"rank{k}": plain_float(v) for k, v in self.cmc.items()},
            "num_mated_probes": int(self.num_mated),
            "num_nonmated_probes": int(self.num_nonmated),
            "num_gallery": int(self.num_gallery),
            "num_distractors": int(self.num_distractors),
        }
        if self.dir_at_fpir:
            out["dir_at_fpir"] = {far_key(f): {str(k): plain_float(v) for k, v in d.items()}
                                  for f, d in self.dir_at_fpir.items()}
            out["fpir_obtained"] = {far_key(f): plain_float(v) for f, v in self.fpir_obtained.items()}
            out["thresholds"] = {far_key(f): plain_float(v) for f, v in self.thresholds.items()}
        return out


def fpir_thresholds(nonmated_top: np.ndarray, fpir_levels: Sequence[float]) -> np.ndarray:
    """PFE's ``find_thresholds_by_FAR`` on the non-mated probes' top scores (float32 thresholds).

    Raises ValueError without non-mated probes (open-set identification needs them).
    """
    scores = np.sort(np.asarray(nonmated_top, dtype=np.float32))[::-1]
    if scores.size == 0:
        raise ValueError("open-set identification (FPIR) needs probes without a mate in the gallery")
    levels = np.asarray(list(fpir_levels), dtype=np.float64)
    if np.any(levels < 0) or np.any(levels > 1):
        raise ValueError(f"FPIR levels must be in [0, 1], got {list(fpir_levels)}")
    alarms = np.round(scores.size * levels).astype(np.int64)
    return np.array([scores[0] + np.float64(_EPSILON) if a == 0 else scores[a - 1] for a in alarms],
                    dtype=np.float32)


def identification(
    probe: Any,
    probe_labels: Any,
    gallery: Any,
    gallery_labels: Any,
    ranks: Sequence[int] = DEFAULT_RANKS,
    fpir_levels: Sequence[float] = (),
    chunk: int = 8192,
) -> IdentificationResult:
    """CMC at ``ranks`` (and DIR at each FPIR) of ``probe`` (P, D) searched in ``gallery`` (G, D).

    Labels are integer identities (P,) and (G,); negative gallery labels are distractors. Features need not
    be normalised (they are, in float32). Torch tensors are accepted (CUDA when the probe is on CUDA).
    Raises ValueError on mismatched shapes, no mated probe, or FPIR levels without non-mated probes.
    """
    ranks = tuple(sorted({int(r) for r in ranks}))
    if not ranks or ranks[0] < 1:
        raise ValueError(f"ranks must be positive integers, got {ranks}")
    mr = mated_ranks(probe, probe_labels, gallery, gallery_labels, max(ranks), "argsort_reversed", chunk)
    n_mated = int(mr.has_mate.sum())
    if n_mated == 0:
        raise ValueError("no probe has a mate in the gallery (labels must be shared; negative = distractor)")
    rank_m = mr.rank[mr.has_mate]
    hits = {r: int(np.count_nonzero(rank_m <= r)) for r in ranks}
    cmc = {r: hits[r] / n_mated for r in ranks}
    curve_ranks = np.arange(1, max(ranks) + 1)
    curve = np.count_nonzero(rank_m[None, :] <= curve_ranks[:, None], axis=1) / n_mated

    dir_at: dict[float, dict[int, float]] = {}
    obtained: dict[float, float] = {}
    thresholds: dict[float, float] = {}
    if len(fpir_levels):
        nonmated_top = mr.top_score[~mr.has_mate]
        ths = fpir_thresholds(nonmated_top, fpir_levels)
        mate_score = mr.best_mate[mr.has_mate]
        for level, th in zip(fpir_levels, ths):
            accepted = mate_score >= th  # float32 comparison, as the reference's float32 arrays
            dir_at[float(level)] = {r: int(np.count_nonzero(accepted & (rank_m <= r))) / n_mated for r in ranks}
            obtained[float(level)] = int(np.count_nonzero(nonmated_top >= th)) / nonmated_top.size
            thresholds[float(level)] = float(th)
    g_labels = np.asarray(gallery_labels.cpu() if hasattr(gallery_labels, "cpu") else gallery_labels).reshape(-1)
    return IdentificationResult(
        cmc=cmc,
        hits=hits,
        dir_at_fpir=dir_at,
        fpir_obtained=obtained,
        thresholds=thresholds,
        num_mated=n_mated,
        num_nonmated=int((~mr.has_mate).sum()),
        num_gallery=int(g_labels.shape[0]),
        num_distractors=int(np.count_nonzero(g_labels < 0)),
        cmc_curve=curve,
    )
