"""MegaFace challenge 1 (FaceScrub probes against up to 1M distractors): identification and verification.

``protocol="devkit"`` follows the official devkit's definitions:

- identification: for every identity and every *ordered* pair (probe p, gallery g) of its images, p != g,
  the gallery is the distractor set plus g; rank = 1 + #(distractors d with s(p, d) >= s(p, g)): p is right at
  rank 1 only when s(p, g) is higher than every distractor's score (a tie counts against the mate). Only
  ranks 1..10 matter, so each probe keeps a running top-10 of its distractor scores.
- verification: genuine = unordered FaceScrub pairs of one identity, impostor = FaceScrub x distractors.
  TAR at FAR f uses the threshold t = the k-th largest impostor score, k = max(1, floor(f * n_impostor)),
  and counts genuine scores strictly above t (so at most k - 1 impostors pass). A running top-K of impostor
  scores over distractor chunks gives t exactly, without histograms; it is fed from each chunk's per-row
  top-16 (also used for the ranks), scanning in full only rows whose 16th score reaches the running bound.

``protocol="seed"`` reproduces the paper repository's evaluation (Zacharynjust/FR-closeness-and-diversity,
eval/eval_megaface.py): rank-1 = fraction of ordered same-identity pairs whose score beats the probe's best
distractor (strictly), counted as ``#(intra > best) - 1`` per probe; verification from 10,000-bin
histograms of probe x (probes + distractors) scores, self pairs removed from the last bin, impostors
including other FaceScrub identities, and its binary search + linear interpolation ``find_score``.

Scores are float32 cosines of L2-normalised features computed with torch (CUDA when the inputs are CUDA
tensors), chunked over distractors so that 3,530 x 1M x 512 fits in a few GB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cdface.eval._arrays import far_key, plain_float

__all__ = [
    "MegaFaceIdResult",
    "MegaFaceVerifResult",
    "megaface_identification",
    "megaface_verification",
    "megaface_evaluate",
    "DEFAULT_MEGAFACE_FARS",
]

# 1e-4 ... 1e-9: papers compare 1e-4 ... 1e-6; the devkit's plots go down to 1e-9
DEFAULT_MEGAFACE_FARS = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9)
_SEED_FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9)
_SEED_BINS, _SEED_LOW, _SEED_HIGH, _SEED_STEP = 10000, -1.0, 1.0 + 1e-5, 10
_ROW_K = 16  # per-row top scores kept per chunk (>= the largest CMC rank)


@dataclass(frozen=True)
class MegaFaceIdResult:
    rank1: float
    cmc: dict[int, float]
    size_curve: dict[int, float] = field(default_factory=dict)  # distractor subset size -> rank-1
    num_pairs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank1": plain_float(self.rank1),
            "cmc": {str(k): plain_float(v) for k, v in self.cmc.items()},
            "size_curve": {str(k): plain_float(v) for k, v in self.size_curve.items()},
            "num_identification_pairs": int(self.num_pairs),
        }


@dataclass(frozen=True)
class MegaFaceVerifResult:
    tar_at_far: dict[float, float]
    thresholds: dict[float, float]
    num_genuine: int
    num_impostor: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "tar_at_far": {far_key(k): plain_float(v) for k, v in self.tar_at_far.items()},
            "verification_thresholds": {far_key(k): plain_float(v) for k, v in self.thresholds.items()},
            "num_genuine": int(self.num_genuine),
            "num_impostor": int(self.num_impostor),
        }


def _as_tensor(x: Any, device: torch.device | None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    return t.to(device=device if device is not None else t.device, dtype=torch.float32)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def _same_identity_pairs(labels: np.ndarray, ordered: bool) -> tuple[np.ndarray, np.ndarray]:
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    if not ordered:
        same = np.triu(same)
    return np.nonzero(same)


def _subset_order(n: int, sizes: tuple[int, ...], seed: int) -> tuple[np.ndarray, list[int]]:
    """Distractor visiting order: a seeded permutation when subset sizes are asked (subset of size s =
    the first s of it, so the subsets are nested), else the natural order; plus the sorted checkpoints."""
    sizes = tuple(sorted({int(s) for s in sizes if 0 < int(s) < n}))
    order = np.random.default_rng(seed).permutation(n) if sizes else np.arange(n)
    return order, [*sizes, n]


def megaface_evaluate(
    probe: Any,
    probe_labels: Any,
    distractors: Any,
    ranks: tuple[int, ...] = tuple(range(1, 11)),
    distractor_sizes: tuple[int, ...] = (),
    seed: int = 0,
    far_levels: tuple[float, ...] = DEFAULT_MEGAFACE_FARS,
    protocol: str = "devkit",
    chunk: int = 32768,
    identification: bool = True,
    verification: bool = True,
    masked_distractors: int = 0,
) -> tuple[MegaFaceIdResult | None, MegaFaceVerifResult | None]:
    """Identification and verification in one pass over the distractors (see the module docstring).

    ``masked_distractors``: distractors left out of ``distractors`` that still count as impostors of every
    probe but can neither outrank a mate nor be accepted: insightface's ``remove_noises.py`` pads the 686
    noisy MegaFace images with a huge extra coordinate, which keeps them in the FAR denominator.
    """
    if protocol not in ("devkit", "seed"):
        raise ValueError(f"protocol must be 'devkit' or 'seed', got {protocol!r}")
    device = probe.device if isinstance(probe, torch.Tensor) else None
    p = _normalize(_as_tensor(probe, device))
    d_all = _as_tensor(distractors, device)
    labels = (probe_labels.cpu().numpy() if isinstance(probe_labels, torch.Tensor)
              else np.asarray(probe_labels)).reshape(-1)
    if p.ndim != 2 or d_all.ndim != 2 or p.shape[1] != d_all.shape[1] or labels.shape[0] != p.shape[0]:
        raise ValueError(f"probe {tuple(p.shape)}, labels {labels.shape}, distractors {tuple(d_all.shape)}")
    n_p, n_d = p.shape[0], d_all.shape[0]
    if n_d == 0:
        raise ValueError("no distractors")
    max_rank = max(ranks)
    intra = (p @ p.T).cpu().numpy()
    order, checkpoints = _subset_order(n_d, distractor_sizes, seed)

    gi, gj = _same_identity_pairs(labels, ordered=True)
    n_imp = n_p * (n_d + int(masked_distractors))
    k_levels = {f: max(1, int(math.floor(f * n_imp))) for f in far_levels}
    big_k = max(k_levels.values()) if verification and protocol == "devkit" else 0

    top = torch.full((n_p, max_rank), -math.inf, device=p.device)  # running top scores per probe
    imp_top = torch.empty(0, device=p.device)
    n_steps = math.ceil(n_p / _SEED_STEP)
    seed_hist = np.zeros((n_steps, _SEED_BINS), dtype=np.int64) if verification and protocol == "seed" else None
    size_curve: dict[int, float] = {}
    done = 0
    for stop in checkpoints:
        while done < stop:
            end = min(done + chunk, stop)
            idx = torch.from_numpy(order[done:end]).to(d_all.device)
            d = _normalize(d_all.index_select(0, idx).to(p.device))
            s = p @ d.T
            # one row-wise top-k per chunk serves both identification and the impostor top-K
            row_top = torch.topk(s, min(max(max_rank, _ROW_K), s.shape[1]), dim=1).values
            if identification:
                k = min(max_rank, s.shape[1])
                top = torch.topk(torch.cat([top, row_top[:, :k]], 1), max_rank, dim=1).values
            if big_k:
                imp_top = _merge_top(imp_top, s, big_k, row_top)
            if seed_hist is not None:
                for st in range(n_steps):  # per 10-probe step, as the reference accumulates
                    rows = s[st * _SEED_STEP:(st + 1) * _SEED_STEP]
                    seed_hist[st] += torch.histc(rows, _SEED_BINS, _SEED_LOW, _SEED_HIGH).cpu().numpy().astype(
                        np.int64)
            done = end
        if identification and stop < n_d:
            size_curve[stop] = _rank_cmc(top.cpu().numpy(), intra, gi, gj, labels, protocol, (1,))[1]

    id_res = None
    if identification:
        cmc = _rank_cmc(top.cpu().numpy(), intra, gi, gj, labels, protocol, tuple(ranks))
        size_curve[n_d] = cmc[1] if 1 in cmc else float("nan")
        id_res = MegaFaceIdResult(cmc.get(1, float("nan")), cmc, size_curve, int(gi.size))
    ver_res = None
    if verification:
        if protocol == "devkit":
            ver_res = _devkit_verification(intra, labels, imp_top.cpu().numpy(), k_levels, n_imp)
        else:
            ver_res = _seed_verification(p, labels, seed_hist, far_levels, n_d)
    return id_res, ver_res


def _merge_top(current: torch.Tensor, scores: torch.Tensor, k: int, row_top: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Running top-k (values only) of all impostor scores seen so far.

    Once ``current`` holds k values, only scores >= its smallest can enter. ``row_top`` (each row's largest
    scores, descending) holds all such scores of every row whose last kept value is below that bound, so
    only the other (rare) rows are scanned in full: the same candidate multiset, hence the same values.
    """
    if current.numel() >= k:
        bound = current[-1]
        if row_top is None:
            flat = scores.reshape(-1)
            flat = flat[flat >= bound]
        else:
            full = row_top[:, -1] >= bound  # rows that may hold more candidates than row_top keeps
            part = row_top[~full]
            flat = part[part >= bound]
            if bool(full.any()):
                rest = scores[full]
                flat = torch.cat([flat, rest[rest >= bound]])
    else:
        flat = scores.reshape(-1)
    merged = torch.cat([current, flat])
    if merged.numel() > k:
        merged = torch.topk(merged, k, sorted=True).values
    else:
        merged = torch.sort(merged, descending=True).values
    return merged


def _rank_cmc(top: np.ndarray, intra: np.ndarray, gi: np.ndarray, gj: np.ndarray, labels: np.ndarray,
              protocol: str, ranks: tuple[int, ...]) -> dict[int, float]:
    if protocol == "seed":  # rank-1 only: #(intra[i] > best distractor of i) - 1 per probe, over sum M(M-1)
        same = labels[:, None] == labels[None, :]
        beats = np.count_nonzero(same & (intra > top[:, :1]), axis=1) - 1
        total = int(np.count_nonzero(same)) - labels.size
        return {k: (float(beats.sum()) / total if total else float("nan")) for k in ranks}
    genuine = intra[gi, gj]
    rank = 1 + np.count_nonzero(top[gi] >= genuine[:, None], axis=1)  # a tied distractor outranks the mate
    n = max(gi.size, 1)
    return {k: int(np.count_nonzero(rank <= k)) / n for k in ranks}


def _devkit_verification(intra: np.ndarray, labels: np.ndarray, imp_top: np.ndarray,
                         k_levels: dict[float, int], n_imp: int) -> MegaFaceVerifResult:
    gi, gj = _same_identity_pairs(labels, ordered=False)
    genuine = intra[gi, gj]
    tar: dict[float, float] = {}
    ths: dict[float, float] = {}
    for f, k in k_levels.items():
        t = float(imp_top[k - 1]) if k <= imp_top.size else -math.inf
        ths[f] = t
        tar[f] = int(np.count_nonzero(genuine > t)) / max(genuine.size, 1)
    return MegaFaceVerifResult(tar, ths, int(genuine.size), int(n_imp))


def _find_score(far: np.ndarray, vr: np.ndarray, target: float) -> float:
    """The paper repository's ``find_score``: binary search on the decreasing FAR curve, then linear
    interpolation (its early exit returns a tuple there; the number it means, 0.0, is returned here)."""
    lo, hi, e = 0, far.size - 1, -1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if far[mid] == target:
            if target != 0:
                return float(vr[mid])
            e = mid
            break
        if far[mid] < target:
            hi = mid
        else:
            lo = mid
    if target == 0:
        i = e
        while i >= 0 and far[i] == 0:
            i -= 1
        return float(vr[i + 1]) if i >= 0 else float(vr[hi])
    if far[lo] / target >= 8:
        return 0.0
    return float((target - far[lo]) / (far[hi] - far[lo]) * (vr[hi] - vr[lo]) + vr[lo])


def _seed_verification(p: torch.Tensor, labels: np.ndarray, dist_hist: np.ndarray,
                       far_levels: tuple[float, ...], n_d: int) -> MegaFaceVerifResult:
    n_p = p.shape[0]
    n_steps = dist_hist.shape[0]
    pp = p @ p.T
    lab = torch.from_numpy(labels).to(p.device)
    same = lab[:, None] == lab[None, :]
    pos = np.zeros((n_steps, _SEED_BINS), dtype=np.float32)
    neg = np.zeros((n_steps, _SEED_BINS), dtype=np.float32)
    for st in range(n_steps):
        rows = slice(st * _SEED_STEP, (st + 1) * _SEED_STEP)
        sr, mr = pp[rows], same[rows]
        pos[st] = torch.histc(sr[mr], _SEED_BINS, _SEED_LOW, _SEED_HIGH).cpu().numpy()
        # probe x (other-identity probes + distractors): both histogrammed separately, counts are exact
        neg[st] = (torch.histc(sr[~mr], _SEED_BINS, _SEED_LOW, _SEED_HIGH).cpu().numpy().astype(np.int64)
                   + dist_hist[st]).astype(np.float32)
    pos_bins = np.add.accumulate(pos, axis=0, dtype=np.float32)[-1]  # float32 running sums, like the GPU
    neg_bins = np.add.accumulate(neg, axis=0, dtype=np.float32)[-1]
    pos_bins[-1] -= np.float32(n_p)
    n_pos, n_neg = float(pos_bins.sum(dtype=np.float32)), float(neg_bins.sum(dtype=np.float32))
    far = (np.cumsum(neg_bins[::-1], dtype=np.float32)[::-1] / np.float32(n_neg)).astype(np.float32)
    vr = (np.cumsum(pos_bins[::-1], dtype=np.float32)[::-1] / np.float32(n_pos)).astype(np.float32)
    tar = {float(f): _find_score(far, vr, f) for f in far_levels}
    return MegaFaceVerifResult(tar, {float(f): float("nan") for f in far_levels}, int(n_pos), int(n_neg))


def megaface_identification(probe: Any, probe_labels: Any, distractors: Any,
                            ranks: tuple[int, ...] = tuple(range(1, 11)),
                            distractor_sizes: tuple[int, ...] = (), seed: int = 0,
                            protocol: str = "devkit", chunk: int = 32768) -> MegaFaceIdResult:
    """CMC (ranks 1..10) and the rank-1 per distractor-subset size (nested seeded subsets)."""
    res, _ = megaface_evaluate(probe, probe_labels, distractors, ranks=ranks, distractor_sizes=distractor_sizes,
                               seed=seed, protocol=protocol, chunk=chunk, verification=False)
    assert res is not None
    return res


def megaface_verification(probe: Any, probe_labels: Any, distractors: Any,
                          far_levels: tuple[float, ...] = DEFAULT_MEGAFACE_FARS, protocol: str = "devkit",
                          chunk: int = 32768) -> MegaFaceVerifResult:
    """TAR at each FAR (exact top-k threshold for the devkit protocol)."""
    _, res = megaface_evaluate(probe, probe_labels, distractors, far_levels=far_levels, protocol=protocol,
                               chunk=chunk, identification=False)
    assert res is not None
    return res
