"""IJB-B / IJB-C scoring from per-image features, bit-identical to insightface's ``ijb_11.py``/``ijb_1n.py``.

The pipeline, one module per step:

- ``ijb_templates``: image features -> template features (media average, template sum, L2 norm), as the
  reference does it operation for operation;
- 1:1, ``ijb_verification``: ``exact=True`` is the reference implementation (``ijb_exact``: float64
  ``sum(f1 * f2)`` per pair, sklearn's ROC from ``roc``); ``exact=False`` (default) is the fast path
  (``ijb_fast``: float32 block-Gram scores with the pairs near each picked threshold rescored exactly), whose
  TAR@FAR table and picked points provably equal the reference's;
- 1:N, ``ijb_identification`` (here): ``ijb_1n.py``'s CMC and TPIR@FPIR, or NIST's open-set protocol.

insightface's TAR@FAR pick (nearest FPR, largest TPR on ties) is ``roc.far_points``, the one place to change it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cdface.eval import ijb_exact, ijb_fast
from cdface.eval._arrays import far_key, plain_float, to_numpy
from cdface.eval.ijb_exact import pair_scores
from cdface.eval.ijb_fast import fast_pair_scores
from cdface.eval.ijb_templates import image_features, template_features, template_rows
from cdface.eval.roc import DEFAULT_FAR_LEVELS, roc_curve, tar_at_far

__all__ = [
    "IJBVerificationResult",
    "IJBIdentificationResult",
    "image_features",
    "template_features",
    "pair_scores",
    "fast_pair_scores",
    "ijb_verification",
    "ijb_identification",
]


@dataclass(frozen=True)
class IJBVerificationResult:
    """1:1 template verification: TAR at each FAR level (insightface's table, as fractions)."""

    tar_at_far: dict[float, float]
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)  # float64 per pair, in input order
    num_templates: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tar_at_far": {far_key(k): plain_float(v) for k, v in self.tar_at_far.items()},
            "num_pairs": int(self.scores.shape[0]),
            "num_templates": int(self.num_templates),
        }


@dataclass(frozen=True)
class IJBIdentificationResult:
    """1:N identification: CMC at ``ranks`` and TPIR at each FPIR level (fractions)."""

    cmc: dict[int, float]
    tpir_at_fpir: dict[float, float]
    thresholds: dict[float, float]
    protocol: str
    num_probes: int
    num_gallery: int
    per_gallery: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"rank{k}": plain_float(v) for k, v in self.cmc.items()}
        out["tpir_at_fpir"] = {far_key(k): plain_float(v) for k, v in self.tpir_at_fpir.items()}
        out["thresholds"] = {far_key(k): plain_float(v) for k, v in self.thresholds.items()}
        out["protocol"] = self.protocol
        out["num_probes"] = int(self.num_probes)
        out["num_gallery"] = int(self.num_gallery)
        if self.per_gallery:
            out["per_gallery"] = self.per_gallery
        return out


def ijb_verification(
    features: Any,
    faceness: Any,
    templates: Any,
    medias: Any,
    pairs: Any,
    labels: Any,
    use_norm_score: bool = True,
    use_detector_score: bool = True,
    far_levels: Any = DEFAULT_FAR_LEVELS,
    num_threads: int | None = None,
    exact: bool = False,
    backend: str = "auto",
) -> IJBVerificationResult:
    """IJB 1:1: TAR@FAR from per-image features, as insightface's ``ijb_11.py`` prints it (x100 there).

    ``features`` (M, D) float32 flip-fused image features (numpy or torch), ``faceness`` (M,), ``templates``
    and ``medias`` (M,) ids, ``pairs`` (P, 2) template ids, ``labels`` (P,) 1 = same subject.
    ``exact=True``: the reference, bit-identical float64 scores (numpy, host; ``ijb_exact``).
    ``exact=False``: the fast path (``ijb_fast``; on the GPU when ``features`` is a CUDA tensor) whose TAR@FAR
    table equals ``exact=True``'s. ``scores`` are float64 on both paths. ``backend`` (fast path only):
    ``"torch"`` pools templates and scores with torch on the features' device, ``"numpy"`` on the host,
    ``"auto"``: torch for CUDA tensors. Errors: ``ValueError`` for mismatched lengths or unknown template ids.
    """
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', got {backend!r}")
    lab = to_numpy(labels).reshape(-1)
    p = to_numpy(pairs).reshape(-1, 2)
    if lab.shape[0] != p.shape[0]:
        raise ValueError(f"{p.shape[0]} pairs but {lab.shape[0]} labels")
    common = (features, faceness, templates, medias, p)
    if exact:
        scores, n_templates = ijb_exact.verification_scores(*common, use_norm_score, use_detector_score,
                                                            num_threads)
        fpr, tpr, _ = roc_curve(lab, scores)
    else:
        scores, fpr, tpr, n_templates = ijb_fast.verification(*common, lab, use_norm_score, use_detector_score,
                                                              far_levels, num_threads, backend)
    return IJBVerificationResult(tar_at_far(fpr, tpr, far_levels), fpr, tpr, scores, n_templates)


def _pick_templates(all_templates: np.ndarray, all_feats: np.ndarray, tids: np.ndarray, sids: np.ndarray,
                    what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (sorted) templates of a list, the subject of each template's first row, and their features."""
    uniq, first = np.unique(tids, return_index=True)
    rows = template_rows(all_templates, uniq, what)
    return uniq, sids[first], all_feats[rows]


def _mated_ranks(sim: np.ndarray, mate: np.ndarray, max_rank: int) -> np.ndarray:
    """1-based position of the mate in ``np.argsort(-sim)`` per row (exact, ties included).

    Without ties at the mate's score the rank is 1 + #(scores above it). Rows with a tie that could reach
    the top ``max_rank`` are re-ranked with the same ``np.argsort(-sim)`` the reference uses.
    """
    rows = np.arange(sim.shape[0])
    mated = sim[rows, mate]
    greater = np.count_nonzero(sim > mated[:, None], axis=1)
    ties = np.count_nonzero(sim == mated[:, None], axis=1) - 1
    ranks = greater + 1
    # ties near the top, and NaN mates (argsort puts NaN last; a comparison count would call it rank 1)
    redo = np.flatnonzero(((ties > 0) & (greater < max_rank)) | np.isnan(mated))
    if redo.size:
        order = np.argsort(-sim[redo], axis=1)
        ranks[redo] = np.argmax(order == mate[redo, None], axis=1) + 1
    return ranks


def _insightface_1n(probe_feats: np.ndarray, probe_sids: np.ndarray, gal_feats: np.ndarray,
                    gal_sids: np.ndarray, ranks: tuple[int, ...], fpir_levels: tuple[float, ...]
                    ) -> tuple[dict[int, float], dict[float, float], dict[float, float]]:
    order = np.argsort(gal_sids, kind="stable")
    sorted_sids = gal_sids[order]
    repeated = sorted_sids[1:][sorted_sids[1:] == sorted_sids[:-1]]
    if np.isin(repeated, probe_sids).any():  # only subjects that probes ask for, as gen_mask checks
        raise ValueError("a probed subject has several gallery templates (insightface's gen_mask refuses this)")
    idx = np.minimum(np.searchsorted(sorted_sids, probe_sids), gal_sids.size - 1)
    found = sorted_sids[idx] == probe_sids
    if not np.all(found):
        missing = probe_sids[np.flatnonzero(~found)[0]]
        raise ValueError(f"probe subject {missing} has no gallery template (insightface needs one)")
    mate = order[idx]
    sim = np.dot(probe_feats, gal_feats.T)
    n_q = sim.shape[0]
    r = _mated_ranks(sim, mate, max(ranks))
    cmc = {k: int(np.count_nonzero(r <= k)) / n_q for k in ranks}
    pos_sims = sim[np.arange(n_q), mate].copy()
    sim[np.arange(n_q), mate] = -2.0
    neg = sim[sim > -2.0]
    tpir: dict[float, float] = {}
    ths: dict[float, float] = {}
    for level in fpir_levels:  # two levels
        k = math.ceil(n_q * level)
        if not 1 <= k <= neg.size:
            raise ValueError(f"FPIR {level}: needs the {k}-th largest of {neg.size} non-mated scores")
        th = float(np.partition(neg, neg.size - k)[neg.size - k])
        ths[float(level)] = th
        tpir[float(level)] = int(np.sum(pos_sims > th)) / n_q
    return cmc, tpir, ths


def _nist_1n(probe_feats: np.ndarray, probe_sids: np.ndarray, gal_feats: np.ndarray, gal_sids: np.ndarray,
             ranks: tuple[int, ...], fpir_levels: tuple[float, ...]) -> dict[str, Any]:
    """Open-set identification against one gallery: mated probes for CMC/TPIR, non-mated ones for FPIR.

    The threshold at FPIR f is the (floor(f * n_nonmated) + 1)-th largest non-mated top score, so that at
    most a fraction f of non-mated probes score strictly above it; a mated probe counts for TPIR when its
    mate is at rank 1 and scores strictly above the threshold.
    """
    order = np.argsort(gal_sids, kind="stable")
    idx = np.searchsorted(gal_sids, probe_sids, sorter=order)
    idx = np.minimum(idx, gal_sids.size - 1)
    mated = gal_sids[order[idx]] == probe_sids
    sim = np.dot(probe_feats, gal_feats.T)
    mate = order[idx[mated]]
    sim_m = sim[mated]
    r = _mated_ranks(sim_m, mate, max(ranks)) if sim_m.size else np.zeros(0, dtype=np.int64)
    n_m = max(int(mated.sum()), 1)
    cmc = {k: int(np.count_nonzero(r <= k)) / n_m for k in ranks}
    top_nm = np.sort(sim[~mated].max(axis=1))[::-1] if (~mated).any() else np.zeros(0)
    mate_scores = sim_m[np.arange(sim_m.shape[0]), mate]
    tpir: dict[float, float] = {}
    ths: dict[float, float] = {}
    for level in fpir_levels:
        k = int(math.floor(level * top_nm.size))
        th = float(top_nm[k]) if k < top_nm.size else -np.inf
        ths[float(level)] = th
        tpir[float(level)] = int(np.count_nonzero((r == 1) & (mate_scores > th))) / n_m
    return {"cmc": cmc, "tpir": tpir, "thresholds": ths, "num_mated": int(mated.sum()),
            "num_nonmated": int((~mated).sum()), "num_gallery": int(gal_sids.size)}


def ijb_identification(
    features: Any,
    faceness: Any,
    templates: Any,
    medias: Any,
    galleries: list[tuple[Any, Any]],
    probes: tuple[Any, Any],
    protocol: str = "insightface",
    ranks: tuple[int, ...] = (1, 5, 10),
    fpir_levels: tuple[float, ...] = (0.01, 0.1),
    use_norm_score: bool = True,
    use_detector_score: bool = True,
) -> IJBIdentificationResult:
    """IJB 1:N. ``galleries`` = [(template ids, subject ids) of G1/S1 rows, of G2/S2 rows]; ``probes`` the
    mixed probe rows.

    ``protocol="insightface"``: exactly ``ijb_1n.py`` (galleries stacked, every probe mated; rank-k from
    ``argsort(-sim)``; TPIR at FPIR f: fraction of probes whose mated score is above the
    ``ceil(f * n_probes)``-th largest non-mated probe-gallery score). ``protocol="nist"``: open-set per
    gallery (see ``_nist_1n``), metrics averaged over the galleries, each gallery also reported.
    """
    x = image_features(features, faceness, use_norm_score, use_detector_score)
    all_t, all_f = template_features(x, templates, medias, norm="plain")
    p_tids, p_sids = (to_numpy(a).astype(np.int64).reshape(-1) for a in probes)
    gals = [tuple(to_numpy(a).astype(np.int64).reshape(-1) for a in g) for g in galleries]
    _, p_sub, p_feat = _pick_templates(all_t, all_f, p_tids, p_sids, "probes")
    if protocol == "insightface":
        g_tids = np.concatenate([g[0] for g in gals])
        g_sids = np.concatenate([g[1] for g in gals])
        _, g_sub, g_feat = _pick_templates(all_t, all_f, g_tids, g_sids, "gallery")
        cmc, tpir, ths = _insightface_1n(p_feat, p_sub, g_feat, g_sub, tuple(ranks), tuple(fpir_levels))
        return IJBIdentificationResult(cmc, tpir, ths, protocol, int(p_sub.size), int(g_sub.size))
    if protocol != "nist":
        raise ValueError(f"protocol must be 'insightface' or 'nist', got {protocol!r}")
    per = []
    for i, (g_tids, g_sids) in enumerate(gals):
        _, g_sub, g_feat = _pick_templates(all_t, all_f, g_tids, g_sids, f"gallery {i + 1}")
        per.append(_nist_1n(p_feat, p_sub, g_feat, g_sub, tuple(ranks), tuple(fpir_levels)))
    cmc = {k: float(np.mean([g["cmc"][k] for g in per])) for k in ranks}
    tpir = {float(f): float(np.mean([g["tpir"][float(f)] for g in per])) for f in fpir_levels}
    ths = {float(f): float(np.mean([g["thresholds"][float(f)] for g in per])) for f in fpir_levels}
    per_json = [
        {
            **{f"rank{k}": plain_float(v) for k, v in g["cmc"].items()},
            "tpir_at_fpir": {far_key(k): plain_float(v) for k, v in g["tpir"].items()},
            "thresholds": {far_key(k): plain_float(v) for k, v in g["thresholds"].items()},
            "num_mated": g["num_mated"], "num_nonmated": g["num_nonmated"], "num_gallery": g["num_gallery"],
        }
        for g in per
    ]
    return IJBIdentificationResult(cmc, tpir, ths, protocol, int(p_sub.size), -1, per_json)
