"""IJB-B / IJB-C scoring from per-image features, bit-identical to insightface's ``ijb_11.py``/``ijb_1n.py``.

Template building follows the reference operation for operation, vectorised:

1. image features (float32, flip already fused) are optionally L2-normalised (``use_norm_score=False``) and
   multiplied by the detector's faceness score (``use_detector_score``);
2. per (template, media): the images of a media are averaged only when it has more than one image
   (float32, summed in image order, then divided by the count);
3. per template: the media features are summed in ascending media-id order (float32), then cast to
   float64 and L2-normalised (1:1 with sklearn's ``normalize``; 1:N with ``x / sqrt(sum(x**2))``).

Sequential float32 sums are reproduced exactly by adding the k-th member of every group at step k (a loop
over ranks inside groups, never over templates); elementwise IEEE adds, so numpy and torch (CPU or CUDA) give
the same bits.

Pair scores, 1:1 (``ijb_verification``):

- ``exact=True``: float64 ``sum(f1 * f2)`` with numpy's pairwise summation, in chunks, like the reference
  (bit-identical; about 1 us per pair on a CPU core).
- ``exact=False`` (default): float32 block Gram matrices. Pairs are mapped to (min row, max row), grouped by
  2048 x 2048 tile of the upper triangle with one radix arg-sort, and each non-empty tile is one
  ``torch`` matmul whose needed entries are gathered. Measured max |fast - exact| = 5.6e-7 over 15.6M
  IJB-C-sized pairs of unit templates (proven bound ~3.1e-5 for D = 512, see ``float32_score_bound``).
  Rounding can swap genuine/impostor pairs whose exact scores lie within ~1e-6 (at IJB-C density it moved
  TAR@1e-3 by one genuine pair), so the pairs in a window around every picked threshold are then rescored
  exactly (float64, as ``exact=True``) and the picks are re-checked until they provably equal the all-exact
  picks (``exact_near_thresholds``): the TAR@FAR table, and the fpr/tpr/threshold of each picked point, are
  identical to ``exact=True``'s. ``scores`` are float64: exact near the picks, float32-rounded elsewhere.
  A level whose pick sits in a long run of one label with no exact ties can need a wide window (then the
  cost grows toward the exact path's); at IJB-C-like density one round of a few thousand pairs suffices.

With CUDA tensors as input, template pooling and pair scoring run on that device (same algorithm, torch);
the ROC and the exact rescoring of the window pairs (numpy templates of just their images) run on the host.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cdface.eval._arrays import far_key, is_cuda_tensor, l2_normalize_rows, plain_float, to_numpy
from cdface.eval.roc import DEFAULT_FAR_LEVELS, far_points, roc_curve, roc_from_sorted, roc_inputs, tar_at_far

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


def image_features(features: Any, faceness: Any, use_norm_score: bool = True,
                   use_detector_score: bool = True) -> Any:
    """Per-image input features of template pooling (float32), as the reference prepares them.

    A torch tensor stays a tensor on its device (the same elementwise float32 operations); the input is
    never modified (a new array is made only where an operation needs one)."""
    if _is_torch(features):
        import torch

        x = features.detach().to(torch.float32)
        if x.ndim != 2:
            raise ValueError(f"features must be (M, D), got {tuple(x.shape)}")
        if not use_norm_score:  # numpy's float32 norms (pairwise sums), so both backends give the same bits
            x = x / torch.from_numpy(_numpy_row_norms(x)).to(x.device)
        if use_detector_score:
            f = torch.as_tensor(to_numpy(faceness, np.float32).reshape(-1), device=x.device)
            if f.shape[0] != x.shape[0]:
                raise ValueError(f"{x.shape[0]} features but {f.shape[0]} faceness scores")
            x = x * f[:, None]
        return x
    x = to_numpy(features).astype(np.float32, copy=False)
    if x.ndim != 2:
        raise ValueError(f"features must be (M, D), got {x.shape}")
    if not use_norm_score:
        x = x / np.sqrt(np.sum(x**2, -1, keepdims=True))
    if use_detector_score:
        f = to_numpy(faceness).astype(np.float32).reshape(-1)
        if f.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} features but {f.shape[0]} faceness scores")
        x = x * f[:, np.newaxis]
    return x


def _numpy_row_norms(x: Any, chunk: int = 65536) -> np.ndarray:
    """(M, 1) float32 ``np.sqrt(np.sum(x**2, -1, keepdims=True))`` of a torch tensor, computed by numpy on
    the host in row chunks (each row's sum is independent of the others, so chunking keeps the bits)."""
    out = np.empty((int(x.shape[0]), 1), dtype=np.float32)
    for s in range(0, out.shape[0], chunk):
        rows = to_numpy(x[s:s + chunk])
        out[s:s + chunk] = np.sqrt(np.sum(rows**2, -1, keepdims=True))
    return out


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _segment_sums(x: Any, starts: np.ndarray, lengths: np.ndarray, rows: np.ndarray | None = None) -> Any:
    """Sequential (in row order) float sums of the row segments [start, start + length): the order numpy's
    ``np.sum(axis=0)`` uses. Step k adds every segment's k-th row; segments are visited longest first so
    that each step is a contiguous slice. ``rows`` (a permutation) reads segment row i from ``x[rows[i]]``
    without materialising ``x[rows]``. ``x`` may be a numpy array or a torch tensor (any device)."""
    order = np.argsort(-lengths, kind="stable")
    s_starts, s_lengths = starts[order], lengths[order]
    max_len = int(s_lengths[0]) if s_lengths.size else 0
    active_counts = np.searchsorted(-s_lengths, -np.arange(1, max_len + 1), side="right")  # len > k

    def index(k: int, n: int) -> Any:
        idx = s_starts[:n] + k
        idx = idx if rows is None else rows[idx]
        return _as_index(idx, x)

    acc = x[index(0, s_starts.size)]
    for k in range(1, max_len):
        n = int(active_counts[k])
        acc[:n] += x[index(k, n)]
    out = acc[_as_index(np.argsort(order), x)]  # back to segment order
    return out


def _as_index(idx: np.ndarray, like: Any) -> Any:
    if _is_torch(like):
        import torch

        return torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64)).to(like.device)
    return idx


def template_features(img_feats: np.ndarray, templates: Any, medias: Any, norm: str = "sklearn"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(unique sorted template ids, (T, D) float64 normalised template features).

    ``norm="sklearn"`` as ijb_11.py (``sklearn.preprocessing.normalize``), ``"plain"`` as ijb_1n.py.
    """
    x = img_feats if _is_torch(img_feats) else np.asarray(img_feats)
    t = to_numpy(templates).astype(np.int64).reshape(-1)
    m = to_numpy(medias).astype(np.int64).reshape(-1)
    if not (x.shape[0] == t.shape[0] == m.shape[0]):
        raise ValueError(f"{x.shape[0]} features, {t.shape[0]} template ids, {m.shape[0]} media ids")
    if norm not in ("sklearn", "plain"):
        raise ValueError(f"norm must be 'sklearn' or 'plain', got {norm!r}")
    order = np.lexsort((np.arange(t.size), m, t))
    ts, ms = t[order], m[order]
    new_media = np.r_[True, (ts[1:] != ts[:-1]) | (ms[1:] != ms[:-1])]
    m_starts = np.flatnonzero(new_media)
    m_counts = np.diff(np.r_[m_starts, ts.size])
    media_sum = _segment_sums(x, m_starts, m_counts, rows=order)
    m_templates = ts[m_starts]
    t_starts = np.flatnonzero(np.r_[True, m_templates[1:] != m_templates[:-1]])
    t_counts = np.diff(np.r_[t_starts, m_templates.size])
    if _is_torch(x):
        import torch

        cnt = torch.from_numpy(m_counts.astype(np.float32)).to(x.device)
        media_feat = media_sum / cnt[:, None]  # /1 leaves single images exact
        tmpl = _segment_sums(media_feat, t_starts, t_counts).to(torch.float64)
        if norm == "sklearn":
            norms = torch.sqrt(torch.sum(tmpl * tmpl, 1))
            norms[norms < 10 * np.finfo(np.float64).eps] = 1.0
            tmpl = tmpl / norms[:, None]
        else:
            tmpl = tmpl / torch.sqrt(torch.sum(tmpl**2, -1, keepdim=True))
        return m_templates[t_starts], tmpl
    media_sum /= m_counts.astype(media_sum.dtype)[:, None]  # /1 leaves single images exact
    tmpl = _segment_sums(media_sum, t_starts, t_counts).astype(np.float64)
    if norm == "sklearn":
        tmpl = l2_normalize_rows(tmpl)
    else:
        tmpl = tmpl / np.sqrt(np.sum(tmpl**2, -1, keepdims=True))
    return m_templates[t_starts], tmpl


def _template_rows(unique_templates: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    """Row of each id in the sorted ``unique_templates`` (a lookup table when ids are small non-negative
    integers, as IJB's are; else a binary search)."""
    if unique_templates.size == 0:
        raise ValueError(f"{what}: no templates")
    lo, hi = int(unique_templates[0]), int(unique_templates[-1])
    if lo >= 0 and hi < max(1 << 22, 4 * ids.size) and unique_templates.size < (1 << 31):
        lut = np.full(hi + 2, -1, dtype=np.int32)
        lut[unique_templates] = np.arange(unique_templates.size, dtype=np.int32)
        rows = lut[np.clip(ids, -1, hi + 1)]  # ids outside [0, hi] land on a -1 entry
        bad = rows < 0
    else:
        rows = np.searchsorted(unique_templates, ids)
        rows = np.minimum(rows, unique_templates.size - 1)
        bad = unique_templates[rows] != ids
    if np.any(bad):
        raise ValueError(f"{what}: template id {ids[np.flatnonzero(bad)[0]]} has no image")
    return rows


def pair_scores(template_feats: np.ndarray, unique_templates: np.ndarray, pairs: Any,
                chunk: int = 2048, num_threads: int | None = None) -> np.ndarray:
    """float64 ``sum(f1 * f2)`` per template pair (numpy's pairwise summation, like the reference).

    Pairs are visited sorted by the first template for memory locality, in chunks with reused buffers,
    on ``num_threads`` threads (numpy releases the GIL); each score is computed independently, so the
    numbers do not depend on chunking or threads.
    """
    p = to_numpy(pairs).astype(np.int64).reshape(-1, 2)
    r1 = _template_rows(unique_templates, p[:, 0], "pairs")
    r2 = _template_rows(unique_templates, p[:, 1], "pairs")
    order = np.argsort(r1, kind="stable")
    r1, r2 = r1[order], r2[order]
    feats = np.ascontiguousarray(template_feats, dtype=np.float64)
    out_sorted = np.empty(p.shape[0], dtype=np.float64)
    bounds = list(range(0, p.shape[0], chunk))
    threads = max(1, min(num_threads or min(4, os.cpu_count() or 1), len(bounds) or 1))

    def work(part: list[int]) -> None:
        a = np.empty((chunk, feats.shape[1]))
        b = np.empty((chunk, feats.shape[1]))
        for s in part:
            n = min(chunk, p.shape[0] - s)
            np.take(feats, r1[s:s + n], axis=0, out=a[:n])
            np.take(feats, r2[s:s + n], axis=0, out=b[:n])
            np.multiply(a[:n], b[:n], out=a[:n])
            np.sum(a[:n], -1, out=out_sorted[s:s + n])

    if threads == 1:
        work(bounds)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, [bounds[i::threads] for i in range(threads)]))
    scores = np.empty_like(out_sorted)
    scores[order] = out_sorted
    return scores


_TILE = 2048  # block Gram tile (rows x cols); 16 MiB of float32 per tile


def fast_pair_scores(template_feats: Any, rows1: Any, rows2: Any, tile: int = _TILE) -> Any:
    """float32 ``f1 . f2`` per pair of template rows via block Gram matrices (BLAS / cuBLAS matmul).

    Each pair is mapped to (min row, max row) of the symmetric Gram matrix and grouped by its ``tile`` x
    ``tile`` block of the upper triangle (one radix arg-sort); every non-empty block is one matmul whose
    needed entries are gathered. The loop is over blocks (at most ~(T / tile)^2 / 2), never over pairs.
    Returns a numpy array for numpy input, else a tensor on the features' device.
    """
    import torch

    if not 1 <= tile <= 32768:  # in-tile offsets are int32
        raise ValueError(f"tile must be in [1, 32768], got {tile}")
    on_torch = _is_torch(template_feats)
    feats = template_feats if on_torch else torch.from_numpy(np.ascontiguousarray(template_feats))
    feats = feats.detach().to(torch.float32).contiguous()
    n_rows = int(feats.shape[0])
    small = np.int32 if n_rows < (1 << 31) else np.int64  # row indices and in-tile offsets
    r1 = to_numpy(rows1).reshape(-1)
    r2 = to_numpy(rows2).reshape(-1)
    r1 = r1.astype(small, copy=False) if r1.dtype != np.int32 else r1
    r2 = r2.astype(small, copy=False) if r2.dtype != np.int32 else r2
    a = np.minimum(r1, r2)
    b = np.maximum(r1, r2)
    n_blocks = -(-n_rows // tile)
    if n_blocks * n_blocks <= (1 << 16):  # uint16 keys: numpy's radix sort
        ka = (a // tile).astype(np.uint16)
        ka *= np.uint16(n_blocks)
        ka += (b // tile).astype(np.uint16)
        key = ka
    else:
        key = (a // tile).astype(np.int64) * n_blocks + (b // tile)
    order = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=n_blocks * n_blocks)
    ends = np.cumsum(counts)
    a_s, b_s = a[order], b[order]
    device = feats.device
    cpu = device.type == "cpu"
    out_sorted = np.empty(r1.size, np.float32) if cpu else torch.empty(r1.size, dtype=torch.float32, device=device)
    with _highest_matmul_precision():
        for t in np.flatnonzero(counts):  # blocks, not pairs
            i, j = divmod(int(t), n_blocks)
            lo, hi = int(ends[t] - counts[t]), int(ends[t])
            gram = feats[i * tile:(i + 1) * tile] @ feats[j * tile:(j + 1) * tile].T
            flat = (a_s[lo:hi] - i * tile) * gram.shape[1]  # int32 while the tile has < 2**31 entries
            flat += b_s[lo:hi] - j * tile
            if cpu:
                np.take(gram.numpy().reshape(-1), flat, out=out_sorted[lo:hi])
            else:
                out_sorted[lo:hi] = gram.reshape(-1)[torch.from_numpy(flat.astype(np.int64)).to(device)]
    if on_torch:
        out = torch.empty(r1.size, dtype=torch.float32, device=device)
        out[torch.from_numpy(order).to(device)] = torch.as_tensor(out_sorted, device=device)
        return out
    out_np = np.empty(r1.size, dtype=np.float32)
    out_np[order] = out_sorted
    return out_np


class _highest_matmul_precision:
    """Full float32 matmuls (no TF32 on CUDA, no reduced-precision CPU kernels) for the duration."""

    def __enter__(self) -> None:
        import torch

        self._prec = torch.get_float32_matmul_precision()
        self._tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc: Any) -> None:
        import torch

        torch.set_float32_matmul_precision(self._prec)
        torch.backends.cuda.matmul.allow_tf32 = self._tf32


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

    ``exact=True``: bit-identical float64 scores (numpy, host). ``exact=False``: float32 block-Gram scores
    (on the GPU when ``features`` is a CUDA tensor) with the pairs near each picked threshold rescored
    exactly, so that the TAR@FAR table equals ``exact=True``'s (see the module docstring). ``scores`` are
    float64 on both paths. ``backend`` (fast path only): ``"torch"``
    pools templates and scores with torch on the features' device, ``"numpy"`` on the host, ``"auto"``:
    torch for CUDA tensors.
    """
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', got {backend!r}")
    use_torch = not exact and (backend == "torch" or (backend == "auto" and is_cuda_tensor(features)))
    if use_torch:
        import torch

        feats_in = features if _is_torch(features) else torch.from_numpy(np.ascontiguousarray(features))
    else:
        feats_in = to_numpy(features)
    x = image_features(feats_in, faceness, use_norm_score, use_detector_score)
    uniq, tmpl = template_features(x, templates, medias, norm="sklearn")
    lab = to_numpy(labels).reshape(-1)
    p = to_numpy(pairs).reshape(-1, 2)
    if lab.shape[0] != p.shape[0]:
        raise ValueError(f"{p.shape[0]} pairs but {lab.shape[0]} labels")
    if exact:
        scores = pair_scores(tmpl, uniq, p, num_threads=num_threads)
    else:
        p = p.astype(np.int64, copy=False)
        r1 = _template_rows(uniq, p[:, 0], "pairs")
        r2 = _template_rows(uniq, p[:, 1], "pairs")
        fast = to_numpy(fast_pair_scores(tmpl, r1, r2))
        if use_torch:  # rescore with the host (numpy) templates, as the exact path has them
            def rescore(idx: np.ndarray) -> np.ndarray:
                return _host_pair_scores(features, faceness, templates, medias, p[idx], use_norm_score,
                                         use_detector_score, num_threads)
        else:
            def rescore(idx: np.ndarray) -> np.ndarray:
                return pair_scores(tmpl, uniq, p[idx], num_threads=num_threads)
        scores, fpr, tpr = exact_near_thresholds(fast, lab, far_levels, rescore, float32_score_bound(tmpl))
        return IJBVerificationResult(tar_at_far(fpr, tpr, far_levels), fpr, tpr, scores, int(uniq.size))
    fpr, tpr, _ = roc_curve(lab, scores)
    return IJBVerificationResult(tar_at_far(fpr, tpr, far_levels), fpr, tpr, scores, int(uniq.size))


def _host_pair_scores(features: Any, faceness: Any, templates: Any, medias: Any, pairs: np.ndarray,
                      use_norm_score: bool, use_detector_score: bool, num_threads: int | None) -> np.ndarray:
    """Exact-path scores of ``pairs`` from the images of their templates only: pooling and normalisation
    are per template and per image row, so the numbers equal the full exact path's."""
    t = to_numpy(templates).astype(np.int64).reshape(-1)
    need = np.unique(pairs)
    rows = np.flatnonzero(np.isin(t, need))
    f_rows = to_numpy(features[_as_index(rows, features)] if _is_torch(features) else to_numpy(features)[rows])
    face = to_numpy(faceness).reshape(-1)[rows] if use_detector_score else faceness
    x = image_features(f_rows, face, use_norm_score, use_detector_score)
    uniq, tmpl = template_features(x, t[rows], to_numpy(medias).reshape(-1)[rows], norm="sklearn")
    return pair_scores(tmpl, uniq, pairs, num_threads=num_threads)


def float32_score_bound(template_feats: Any) -> float:
    """Bound on |fast - exact| per pair: the float32 rounding of both D-dim templates (2u relative per
    product) plus any-order float32 summation of D products (gamma_D = D u / (1 - D u)), u = 2**-24, times
    sum |a_i b_i| <= max row norm**2, plus the float64 path's own error (D 2**-53) and the torch pooling's
    float64 normalisation (a few ulps). About 3.1e-5 for D = 512 unit templates (measured max 5.6e-7)."""
    d = int(template_feats.shape[1])
    if _is_torch(template_feats):
        import torch

        nmax = float(torch.linalg.vector_norm(template_feats.to(torch.float64), dim=1).max()) if d else 0.0
    else:
        t = np.asarray(template_feats, dtype=np.float64)
        nmax = float(np.sqrt(np.max(np.einsum("ij,ij->i", t, t)))) if t.size else 0.0
    u = 2.0**-24
    gamma = (d + 2) * u / (1.0 - (d + 2) * u)
    return (nmax * nmax * (gamma + (d + 8) * 2.0**-52)) * 1.01 + 1e-12


_REFINE_RANKS = 2048  # pairs each side (by rank) of the ROC points around a pick, rescored at first
_REFINE_POINTS = 4  # ROC points each side of a pick whose span is rescored at first


def exact_near_thresholds(fast: np.ndarray, labels: Any, far_levels: Any, rescore: Any, bound: float,
                          ranks: int = _REFINE_RANKS, points: int = _REFINE_POINTS
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 scores, fpr, tpr): ``fast`` with the pairs near every picked threshold rescored exactly, so
    that the TAR@FAR picks (point, fpr, tpr, threshold) equal those of the all-exact scores.

    ``rescore(idx)`` returns the exact scores of pairs ``idx``; ``|fast - exact| <= bound`` for every pair
    (checked on the rescored ones; a violation falls back to rescoring everything).

    Why it is exact. Per level, a window [lo, hi] of fast scores (the ROC points ``points`` each side of the
    pick, ``ranks`` more pairs each side, +-(bound + 1e-5)) is rescored; overlapping windows are merged.
    For the merged window holding a level, let U be the smallest fast score above it and L the largest
    below (+-inf if none). A pair outside the window has, in both the all-exact and our hybrid array, a
    value >= U - bound or <= L + bound (fast or exact, |fast - exact| <= bound): its order relative to any
    threshold t in R = (L + bound, U - bound) is certain. Inside R both arrays hold the same values (the
    window's exact scores) and, at each such t, the same counts of positives/negatives >= t. Let v_1 > ...
    > v_m be the distinct values in R. sklearn keeps a point by the counts at its neighbours, so the kept
    points at v_2 ... v_(m-1) (and v_1 / v_m when U / L is infinite: they are the global ends, always kept;
    the (0, 0) point too) are identical in both: call that contiguous run S = [a, b]. FPR grows along the
    curve; if fpr[a] <= level, earlier points are no nearer (and lose ties: insightface takes the last in
    curve order), and if fpr[b] - level > d* (the best distance within S), later points are strictly
    farther, so both arrays pick the same point of S, with the same fpr, tpr and threshold. These two
    conditions are checked on the hybrid curve; a level that fails widens its window (8x ranks, 2x points)
    and is re-checked. Once a window spans every pair, R is the whole line and the check holds, so the loop
    ends. Pairs outside all windows keep their (float32-rounded) fast score, so the returned curve is exact
    only near the picks; the table is exact.
    """
    y, s = roc_inputs(labels, fast)
    levels = [float(x) for x in far_levels]
    pos = y == 1
    n = s.size
    f64 = s.astype(np.float64)
    fs = np.sort(s).astype(np.float64)  # sorted once (float32 SIMD sort), reused for every curve
    if not (np.isfinite(fs[0]) and np.isfinite(fs[-1])):
        raise ValueError("scores must be finite")
    fpr, tpr, thr = roc_from_sorted(fs, np.sort(f64[pos]))
    n_pos = int(np.count_nonzero(pos))
    if not levels or n_pos in (0, n):  # NaN rates: the table does not depend on the scores' order
        return f64, fpr, tpr
    h = f64.copy()
    done = np.zeros(n, dtype=bool)
    slack = bound * 1.01 + 1e-15  # covers the float64 rounding of L + bound, U - bound
    margin = slack + 1e-5
    span = np.array([[np.inf, -np.inf]] * len(levels))
    r_k = np.full(len(levels), ranks, dtype=np.int64)
    p_k = np.full(len(levels), points, dtype=np.int64)
    pending = np.ones(len(levels), dtype=bool)
    hs = fs
    for _ in range(64):
        picks = far_points(fpr, levels)
        for li in np.flatnonzero(pending):
            k, pk, rk = int(picks[li]), int(p_k[li]), int(r_k[li])
            j = int(np.searchsorted(hs, thr[k - pk], "right")) - 1 + rk if k - pk >= 1 else n
            hi = hs[j] + margin if j < n else np.inf
            j = min(int(np.searchsorted(hs, thr[k + pk], "left")) - rk, n - 1) if k + pk < thr.size else -1
            lo = hs[j] - margin if j >= 0 else -np.inf
            span[li] = min(span[li, 0], lo), max(span[li, 1], hi)
        comps, level_comp = _merge_spans(span, 2 * slack)
        members = []
        for lo, hi in comps:
            idx = np.flatnonzero((f64 >= lo) & (f64 <= hi))
            new = idx[~done[idx]]
            if new.size:
                e = np.asarray(rescore(new), dtype=np.float64)
                if not np.all(np.abs(e - f64[new]) <= bound):  # cannot happen if the bound holds
                    h = np.asarray(rescore(np.arange(n)), dtype=np.float64)
                    fpr, tpr, _ = roc_curve(y, h)
                    return h, fpr, tpr
                h[new] = e
                done[new] = True
            members.append(idx)
        hs = fs.copy()
        for (lo, hi), idx in zip(comps, members):  # the window's block of fs, exact values, re-sorted locally
            b0, b1 = np.searchsorted(fs, lo, "left"), np.searchsorted(fs, hi, "right")
            hs[b0:b1] = np.sort(h[idx])
            c0, c1 = np.searchsorted(fs, lo - slack, "left"), np.searchsorted(fs, hi + slack, "right")
            hs[c0:c1].sort()
        fpr, tpr, thr = roc_from_sorted(hs, np.sort(h[pos]))
        picks = far_points(fpr, levels)
        for li, level in enumerate(levels):
            lo, hi = comps[level_comp[li]]
            pending[li] = not _pick_is_certain(fs, hs, fpr, thr, lo, hi, slack, level, int(picks[li]))
        if not pending.any():
            return h, fpr, tpr
        r_k[pending] = np.maximum(8 * r_k[pending], 16)
        p_k[pending] = np.maximum(2 * p_k[pending], 1)
    h = np.asarray(rescore(np.arange(n)), dtype=np.float64)  # unreachable in practice (see above)
    fpr, tpr, _ = roc_curve(y, h)
    return h, fpr, tpr


def _merge_spans(span: np.ndarray, gap: float) -> tuple[list[tuple[float, float]], list[int]]:
    """Merge [lo, hi] spans closer than ``gap`` (so that their locally re-sorted blocks stay disjoint)."""
    order = np.argsort(span[:, 0], kind="stable")
    comps: list[list[float]] = []
    level_comp = [0] * span.shape[0]
    for li in order:
        lo, hi = float(span[li, 0]), float(span[li, 1])
        if comps and lo <= comps[-1][1] + gap:
            comps[-1][1] = max(comps[-1][1], hi)
        else:
            comps.append([lo, hi])
        level_comp[li] = len(comps) - 1
    return [(c[0], c[1]) for c in comps], level_comp


def _pick_is_certain(fs: np.ndarray, hs: np.ndarray, fpr: np.ndarray, thr: np.ndarray, lo: float, hi: float,
                     slack: float, level: float, pick: int) -> bool:
    """The check of ``exact_near_thresholds``' docstring for one level whose window is [lo, hi]."""
    n = fs.size
    b0, b1 = int(np.searchsorted(fs, lo, "left")), int(np.searchsorted(fs, hi, "right"))
    safe = np.ones(thr.size, dtype=bool)
    if b1 < n:  # U = fs[b1]: v_1 = the largest value below U - slack; safe thresholds lie below it
        j = int(np.searchsorted(hs, fs[b1] - slack, "left")) - 1
        if j < 0:
            return False
        safe &= thr < hs[j]
    if b0 > 0:  # L = fs[b0 - 1]: v_m = the smallest value above L + slack
        j = int(np.searchsorted(hs, fs[b0 - 1] + slack, "right"))
        if j >= n:
            return False
        safe &= thr > hs[j]
    idx = np.flatnonzero(safe)
    if idx.size == 0:
        return False
    a, b = int(idx[0]), int(idx[-1])
    d = np.abs(fpr[a:b + 1] - level)
    k = b - int(np.argmin(d[::-1]))  # insightface's rule inside S
    if k != pick:
        return False
    return (a == 0 or fpr[a] <= level) and (b == thr.size - 1 or fpr[b] - level > d[k - a])


def _pick_templates(all_templates: np.ndarray, all_feats: np.ndarray, tids: np.ndarray, sids: np.ndarray,
                    what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (sorted) templates of a list, the subject of each template's first row, and their features."""
    uniq, first = np.unique(tids, return_index=True)
    rows = _template_rows(all_templates, uniq, what)
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
