"""IJB 1:1 fast path (``ijb_verification``'s default): float32 block-Gram scores, then exact rescoring of the
pairs near every picked threshold, so that the TAR@FAR table equals the reference's (``ijb_exact``).

It exists for speed: the exact path costs about 1 us per pair on a CPU core (IJB-C has 15.7M pairs), the
block-Gram matmuls run at BLAS speed. How:

- ``fast_pair_scores``: pairs are mapped to (min row, max row), grouped by 2048 x 2048 tile of the upper
  triangle of the template Gram matrix with one radix arg-sort, and each non-empty tile is one ``torch``
  matmul whose needed entries are gathered. Measured max |fast - exact| = 5.6e-7 over 15.6M IJB-C-sized pairs
  of unit templates (proven bound ~3.1e-5 for D = 512, ``float32_score_bound``).
- Rounding can swap genuine/impostor pairs whose exact scores lie within ~1e-6 (at IJB-C density it moved
  TAR@1e-3 by one genuine pair), so ``exact_near_thresholds`` rescores the pairs in a window around every
  picked threshold exactly (``ijb_exact.pair_scores``) and re-checks the picks until they provably equal the
  all-exact picks: the TAR@FAR table, and the fpr/tpr/threshold of each picked point, are identical to
  ``exact=True``'s. Scores are float64: exact near the picks, float32-rounded elsewhere. A level whose pick
  sits in a long run of one label with no exact ties can need a wide window (then the cost grows toward the
  exact path's); at IJB-C-like density one round of a few thousand pairs suffices.

The threshold rule itself (insightface's nearest-FPR pick) lives once, in ``roc.far_points``, with the
locality property this proof needs next to it (``roc.far_point_within``). With CUDA tensors as input,
template pooling and pair scoring run on that device; the ROC and the exact rescoring run on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cdface.eval import ijb_exact
from cdface.eval._arrays import as_index, is_cuda_tensor, is_torch, to_numpy
from cdface.eval.ijb_templates import image_features, template_features, template_rows
from cdface.eval.roc import far_point_within, far_points, roc_curve, roc_from_sorted, roc_inputs

__all__ = ["verification", "fast_pair_scores", "float32_score_bound", "exact_near_thresholds"]


def verification(features: Any, faceness: Any, templates: Any, medias: Any, pairs: np.ndarray, labels: np.ndarray,
                 use_norm_score: bool, use_detector_score: bool, far_levels: Any, num_threads: int | None,
                 backend: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(float64 scores (P,), fpr, tpr, number of templates) whose TAR@FAR picks equal the exact path's.

    ``backend="torch"`` pools templates and scores with torch on the features' device, ``"numpy"`` on the
    host, ``"auto"``: torch for CUDA tensors. ``pairs`` (P, 2) template ids, ``labels`` (P,) 0/1.
    """
    use_torch = backend == "torch" or (backend == "auto" and is_cuda_tensor(features))
    if use_torch:
        import torch

        feats_in = features if is_torch(features) else torch.from_numpy(np.ascontiguousarray(features))
    else:
        feats_in = to_numpy(features)
    x = image_features(feats_in, faceness, use_norm_score, use_detector_score)
    uniq, tmpl = template_features(x, templates, medias, norm="sklearn")
    p = pairs.astype(np.int64, copy=False)
    r1 = template_rows(uniq, p[:, 0], "pairs")
    r2 = template_rows(uniq, p[:, 1], "pairs")
    fast = to_numpy(fast_pair_scores(tmpl, r1, r2))
    if use_torch:  # rescore with the host (numpy) templates, as the exact path has them
        def rescore(idx: np.ndarray) -> np.ndarray:
            return _host_pair_scores(features, faceness, templates, medias, p[idx], use_norm_score,
                                     use_detector_score, num_threads)
    else:
        def rescore(idx: np.ndarray) -> np.ndarray:
            return ijb_exact.pair_scores(tmpl, uniq, p[idx], num_threads=num_threads)
    scores, fpr, tpr = exact_near_thresholds(fast, labels, far_levels, rescore, float32_score_bound(tmpl))
    return scores, fpr, tpr, int(uniq.size)


def _host_pair_scores(features: Any, faceness: Any, templates: Any, medias: Any, pairs: np.ndarray,
                      use_norm_score: bool, use_detector_score: bool, num_threads: int | None) -> np.ndarray:
    """The exact path's scores of ``pairs``, from the images of their templates only (pooling and
    normalisation are per template, so the numbers equal the full exact path's)."""
    t = to_numpy(templates).astype(np.int64).reshape(-1)
    rows = np.flatnonzero(np.isin(t, np.unique(pairs)))
    f_rows = to_numpy(features[as_index(rows, features)] if is_torch(features) else to_numpy(features)[rows])
    face = to_numpy(faceness).reshape(-1)[rows] if use_detector_score else faceness
    scores, _ = ijb_exact.verification_scores(f_rows, face, t[rows], to_numpy(medias).reshape(-1)[rows], pairs,
                                              use_norm_score, use_detector_score, num_threads)
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
    on_torch = is_torch(template_feats)
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



def float32_score_bound(template_feats: Any) -> float:
    """Bound on |fast - exact| per pair: the float32 rounding of both D-dim templates (2u relative per
    product) plus any-order float32 summation of D products (gamma_D = D u / (1 - D u)), u = 2**-24, times
    sum |a_i b_i| <= max row norm**2, plus the float64 path's own error (D 2**-53) and the torch pooling's
    float64 normalisation (a few ulps). About 3.1e-5 for D = 512 unit templates (measured max 5.6e-7)."""
    d = int(template_feats.shape[1])
    if is_torch(template_feats):
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
    return far_point_within(fpr, int(idx[0]), int(idx[-1]), level) == pick  # S = [idx[0], idx[-1]]
