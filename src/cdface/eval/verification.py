"""Pair verification (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW, ...) exactly as insightface's ``verification.py``.

The protocol: L2-normalise the (flip-fused) embeddings, squared Euclidean distance per pair, 10 contiguous
folds (``KFold(shuffle=False)``: the first ``n % k`` folds are one larger); per fold the best threshold on the
other folds (first arg-max of accuracy over ``thresholds``, predict "same" when ``dist < threshold``) is
applied to the held-out fold. TAR@FAR (``val``) interpolates FAR->threshold with scipy's ``interp1d(kind=
'slinear')`` on the training folds, reproduced here in numpy (a degree-1 B-spline, evaluated by de Boor).

All thresholds are handled at once by sorting the distances and counting with ``searchsorted``; the only
Python loops are over the (10) folds and over cache-sized chunks of pairs for the distances. Results are
bit-identical to the reference, which sums and averages in float64 with numpy. CUDA tensors get their
distances computed on the GPU (torch, same algorithm; last-bit differences possible); the per-threshold
counting works on N floats and runs on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cdface.eval._arrays import far_key, is_cuda_tensor, plain_float, to_numpy

__all__ = [
    "PairResult",
    "evaluate_pairs",
    "pair_distances",
    "kfold_bounds",
    "flip_fuse",
    "embedding_norm_stats",
    "slinear_interp",
    "count_nonfinite_rows",
]


@dataclass(frozen=True)
class PairResult:
    """Verification metrics of one pair set (accuracy in [0, 1], as insightface prints it before x100)."""

    accuracy: float
    accuracy_std: float
    threshold: float  # mean over folds of the best (training-fold) distance threshold
    val: float  # TAR at FAR = far_target, averaged over folds
    val_std: float
    far: float  # the FAR actually obtained, averaged over folds
    far_target: float
    tpr: np.ndarray = field(repr=False)  # ROC over `thresholds`, averaged over folds
    fpr: np.ndarray = field(repr=False)
    fold_accuracies: np.ndarray = field(repr=False)
    fold_thresholds: np.ndarray = field(repr=False)
    num_pairs: int = 0
    # TAR at each requested FAR (mean and std over folds), the `val` rule applied per level
    tar_at_far: dict[float, float] = field(default_factory=dict)
    tar_at_far_std: dict[float, float] = field(default_factory=dict)
    nonfinite_embeddings: int = 0  # rows with NaN/inf: the numbers are then those of broken features

    @property
    def valid(self) -> bool:
        """False when any embedding was non-finite (the reference would still print 0.5-ish accuracies)."""
        return self.nonfinite_embeddings == 0

    def to_dict(self, curves: bool = False) -> dict[str, Any]:
        """Plain-Python summary for JSON (curves only on request: they are 400 numbers each)."""
        out: dict[str, Any] = {
            "accuracy": plain_float(self.accuracy),
            "accuracy_std": plain_float(self.accuracy_std),
            "threshold": plain_float(self.threshold),
            "val": plain_float(self.val),
            "val_std": plain_float(self.val_std),
            "far": plain_float(self.far),
            "far_target": plain_float(self.far_target),
            "num_pairs": int(self.num_pairs),
            "fold_accuracies": [plain_float(v) for v in self.fold_accuracies],
            "valid": self.valid,
            "nonfinite_embeddings": int(self.nonfinite_embeddings),
        }
        if self.tar_at_far:
            out["tar_at_far"] = {far_key(k): plain_float(v) for k, v in self.tar_at_far.items()}
            out["tar_at_far_std"] = {far_key(k): plain_float(v) for k, v in self.tar_at_far_std.items()}
        if curves:
            out["tpr"] = [plain_float(v) for v in self.tpr]
            out["fpr"] = [plain_float(v) for v in self.fpr]
        return out


_NONFINITE_CHUNK = 65536  # rows per check: a memory-mapped (10^6, 512) gallery never needs a full-size mask


def count_nonfinite_rows(*arrays: Any) -> int:
    """Rows (embeddings) holding any NaN or inf, summed over the arrays given (None entries are skipped).

    NumPy arrays (memory-mapped ones included) are checked `_NONFINITE_CHUNK` rows at a time.
    """
    total = 0
    for array in arrays:
        if array is None:
            continue
        if type(array).__module__.startswith("torch"):
            import torch

            total += int((~torch.isfinite(array)).reshape(array.shape[0], -1).any(dim=1).sum())
        else:
            x = np.asarray(array)
            rows = x.reshape(x.shape[0], -1) if x.size else x[:0]
            for r0 in range(0, rows.shape[0], _NONFINITE_CHUNK):
                total += int((~np.isfinite(rows[r0 : r0 + _NONFINITE_CHUNK])).any(axis=1).sum())
    return total


def flip_fuse(embeddings: Any, embeddings_flip: Any) -> Any:
    """Sum of the original and horizontally-flipped embeddings, in float64 (insightface stores float64)."""
    if type(embeddings).__module__.startswith("torch"):
        return embeddings.double() + embeddings_flip.double()
    return to_numpy(embeddings, np.float64) + to_numpy(embeddings_flip, np.float64)


def embedding_norm_stats(embeddings: Any, embeddings_flip: Any | None = None) -> float:
    """insightface's XNorm: the mean L2 norm over all un-fused rows (original rows, then flipped rows).

    Each norm is ``sqrt(dot(x, x))`` as ``np.linalg.norm`` computes it and the sum is sequential in float64,
    as the reference's Python loop does, so the value matches to the last digit.
    """
    parts = [to_numpy(embeddings, np.float64)]
    if embeddings_flip is not None:
        parts.append(to_numpy(embeddings_flip, np.float64))
    x = np.ascontiguousarray(np.concatenate(parts, axis=0))
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (N, D) array, got shape {x.shape}")
    squares = np.matmul(x[:, None, :], x[:, :, None])[:, 0, 0]  # one BLAS dot per row, like linalg.norm
    norms = np.sqrt(squares)
    return float(np.cumsum(norms)[-1] / norms.shape[0])


_DIST_CHUNK = 256  # pairs per step: 512 float64 rows of 512 stay in L2


def pair_distances(embeddings: Any, backend: str = "auto") -> np.ndarray:
    """Squared L2 distance of rows (2i, 2i+1) after sklearn-style row normalisation (float64).

    numpy backend: cast, normalise, subtract, square and sum per chunk of pairs (cache-resident), each row
    with exactly the operations of the whole-array reference, so the bits are the same. torch backend (the
    default for CUDA tensors): the same algorithm with torch ops on the tensor's device; sums may round
    differently in the last bit.
    """
    use_torch = backend == "torch" or (backend == "auto" and is_cuda_tensor(embeddings))
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', got {backend!r}")
    if use_torch:
        import torch

        emb_t = embeddings if type(embeddings).__module__.startswith("torch") else torch.from_numpy(
            np.asarray(embeddings))
        _check_pair_shape(tuple(emb_t.shape))
        x = emb_t.detach().to(torch.float64)
        norms = torch.sqrt(torch.sum(x * x, 1))
        norms = torch.where(norms < 10 * np.finfo(np.float64).eps, torch.ones_like(norms), norms)
        x = x / norms[:, None]
        return torch.sum(torch.square(x[0::2] - x[1::2]), 1).cpu().numpy()
    emb = to_numpy(embeddings)
    _check_pair_shape(emb.shape)
    n = emb.shape[0] // 2
    out = np.empty(n, dtype=np.float64)
    eps10 = 10 * np.finfo(np.float64).eps
    for s in range(0, n, _DIST_CHUNK):  # chunks of pairs: every row is computed independently
        x = np.array(emb[2 * s:2 * (s + _DIST_CHUNK)], dtype=np.float64, copy=True)
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        norms[norms < eps10] = 1.0
        with np.errstate(invalid="ignore"):  # NaN/inf rows stay NaN; they are counted and reported
            x /= norms[:, None]
        diff = np.subtract(x[0::2], x[1::2])
        np.square(diff, out=diff)
        np.sum(diff, 1, out=out[s:s + _DIST_CHUNK])
    return out


def _check_pair_shape(shape: tuple[int, ...]) -> None:
    if len(shape) != 2 or shape[0] % 2 or shape[0] == 0:
        raise ValueError(f"embeddings must have shape (2N, D) with N >= 1, got {shape}")


def kfold_bounds(n: int, n_splits: int) -> list[tuple[int, int]]:
    """Test-fold [start, stop) ranges of ``sklearn.model_selection.KFold(n_splits, shuffle=False)``.

    ``n_splits == 1`` means "train and test on everything", as insightface's ``LFold`` does.
    """
    if n_splits < 1:
        raise ValueError(f"nfolds must be >= 1, got {n_splits}")
    if n_splits == 1:
        return [(0, n)]
    if n < n_splits:
        raise ValueError(f"cannot split {n} pairs into {n_splits} folds")
    sizes = np.full(n_splits, n // n_splits, dtype=np.int64)
    sizes[: n % n_splits] += 1
    stops = np.cumsum(sizes)
    return [(int(stop - size), int(stop)) for size, stop in zip(sizes, stops)]


def slinear_interp(x: np.ndarray, y: np.ndarray, x_new: float) -> float:
    """``scipy.interpolate.interp1d(x, y, kind='slinear')(x_new)``, operation for operation.

    interp1d stable-sorts x, builds the degree-1 B-spline with knots ``[x0, x0, x1, ..., xn, xn]`` and
    evaluates it by de Boor on the last knot interval with ``t[l] <= x_new`` (capped at the last interval);
    an interval of zero width contributes 0 (so repeated end points give 0.0, as scipy does).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] < 2:
        raise ValueError("slinear interpolation needs at least 2 points")
    order = np.argsort(x, kind="mergesort")
    x, y = x[order], y[order]
    xv = float(x_new)
    if np.isnan(xv):
        return float("nan")
    if xv < x[0] or xv > x[-1]:
        raise ValueError(f"{xv} is outside the interpolation range [{x[0]}, {x[-1]}]")
    i = int(np.searchsorted(x, xv, side="right")) - 1
    i = min(max(i, 0), x.shape[0] - 2)
    xa, xb = x[i], x[i + 1]
    if xb == xa:
        return 0.0
    w = 1.0 / (xb - xa)
    h0 = w * (xb - xv)
    h1 = w * (xv - xa)
    return float((0.0 + y[i] * h0) + y[i + 1] * h1)


def _count_below(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold t, how many values satisfy ``values < t`` (NaN never does)."""
    return np.searchsorted(np.sort(values), thresholds, side="left").astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """num / den in float64, with ``empty`` where den == 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.broadcast_to(np.asarray(den, dtype=np.float64), num.shape)
    out = np.full(num.shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def evaluate_pairs(
    embeddings: Any,
    issame: Any,
    nfolds: int = 10,
    thresholds: Any = None,
    far_target: float = 1e-3,
    val_thresholds: Any = None,
    backend: str = "auto",
    far_targets: Any = (),
) -> PairResult:
    """Accuracy (10-fold), ROC and TAR@FAR of a pair set, bit-identical to insightface's ``evaluate``.

    ``embeddings`` are the flip-fused, *un-normalised* rows (2N, D): rows 2i and 2i+1 form pair i.
    ``issame`` (N,) is truthy for genuine pairs. Where the reference would divide by zero in TAR@FAR (a fold
    with no genuine or no impostor pair) the value is NaN. ``backend``: ``"numpy"`` (bit-identical),
    ``"torch"`` (distances with torch ops on the embeddings' device), ``"auto"``: torch for CUDA tensors.
    ``far_targets``: more FAR levels, each scored by the same rule as ``val`` into ``tar_at_far`` (mean over
    folds). Non-finite embeddings are scored as the reference scores them (their distance is NaN, never
    "same") and counted in ``nonfinite_embeddings``; callers report such a result as invalid.
    Raises ValueError when there are fewer pairs than folds.
    """
    thresholds = np.arange(0, 4, 0.01) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    val_thresholds = (
        np.arange(0, 4, 0.001) if val_thresholds is None else np.asarray(val_thresholds, dtype=np.float64)
    )
    same = to_numpy(issame).astype(bool).reshape(-1)
    dist = pair_distances(embeddings, backend)
    if same.shape[0] != dist.shape[0]:
        raise ValueError(f"issame has {same.shape[0]} entries for {dist.shape[0]} pairs")
    folds = kfold_bounds(dist.shape[0], nfolds)

    pos_all = dist[same]
    neg_all = dist[~same]
    tot = {
        "pos": (_count_below(pos_all, thresholds), None, pos_all.size),
        "neg": (_count_below(neg_all, thresholds), _count_below(neg_all, val_thresholds), neg_all.size),
    }

    n_folds = len(folds)
    tprs = np.zeros((n_folds, thresholds.size))
    fprs = np.zeros((n_folds, thresholds.size))
    accuracy = np.zeros(n_folds)
    best_thresholds = np.zeros(n_folds)
    val = np.zeros(n_folds)
    far = np.zeros(n_folds)
    levels = [float(f) for f in far_targets]
    tar_levels = np.zeros((n_folds, len(levels)))
    for k, (start, stop) in enumerate(folds):
        d_test, s_test = dist[start:stop], same[start:stop]
        whole = n_folds == 1
        pos_t, neg_t = d_test[s_test], d_test[~s_test]
        tp_t = _count_below(pos_t, thresholds)
        fp_t, fpv_t = _count_below(neg_t, thresholds), _count_below(neg_t, val_thresholds)
        if whole:  # LFold(1): the training set is the test set
            tp_r, npos_r = tp_t, pos_t.size
            fp_r, fpv_r, nneg_r = fp_t, fpv_t, neg_t.size
        else:
            tp_r, npos_r = tot["pos"][0] - tp_t, tot["pos"][2] - pos_t.size
            fp_r, fpv_r, nneg_r = tot["neg"][0] - fp_t, tot["neg"][1] - fpv_t, tot["neg"][2] - neg_t.size
        n_train = npos_r + nneg_r

        # accuracy = (tp + tn) / n on the training folds; first arg-max wins
        acc_train = (tp_r + (nneg_r - fp_r)).astype(np.float64) / np.float64(n_train)
        best = int(np.argmax(acc_train))
        best_thresholds[k] = thresholds[best]
        tprs[k] = _ratio(tp_t, pos_t.size, 0.0)
        fprs[k] = _ratio(fp_t, neg_t.size, 0.0)
        accuracy[k] = float(tp_t[best] + (neg_t.size - fp_t[best])) / float(d_test.size)

        # TAR @ FAR: interpolate the training FAR curve to the threshold giving far_target
        far_train = _ratio(fpv_r, nneg_r, np.nan)
        val[k], far[k] = _val_far(far_train, val_thresholds, far_target, pos_t, neg_t)
        for j, level in enumerate(levels):
            tar_levels[k, j] = _val_far(far_train, val_thresholds, level, pos_t, neg_t)[0]

    return PairResult(
        accuracy=float(np.mean(accuracy)),
        accuracy_std=float(np.std(accuracy)),
        threshold=float(np.mean(best_thresholds)),
        val=float(np.mean(val)),
        val_std=float(np.std(val)),
        far=float(np.mean(far)),
        far_target=float(far_target),
        tpr=np.mean(tprs, 0),
        fpr=np.mean(fprs, 0),
        fold_accuracies=accuracy,
        fold_thresholds=best_thresholds,
        num_pairs=int(dist.shape[0]),
        tar_at_far={f: float(np.mean(tar_levels[:, j])) for j, f in enumerate(levels)},
        tar_at_far_std={f: float(np.std(tar_levels[:, j])) for j, f in enumerate(levels)},
        nonfinite_embeddings=count_nonfinite_rows(embeddings),
    )


def _val_far(
    far_train: np.ndarray, val_thresholds: np.ndarray, far_target: float, pos_t: np.ndarray, neg_t: np.ndarray
) -> tuple[float, float]:
    """insightface's ``calculate_val_far`` on one test fold: the training-fold threshold reaching
    ``far_target`` (slinear interpolation; 0 when the training FAR never reaches it), then TAR and FAR."""
    if far_train.size and np.max(far_train) >= far_target:
        threshold = slinear_interp(far_train, val_thresholds, far_target)
    else:
        threshold = 0.0
    ta = int(np.count_nonzero(pos_t < threshold))
    fa = int(np.count_nonzero(neg_t < threshold))
    return (ta / pos_t.size if pos_t.size else np.nan), (fa / neg_t.size if neg_t.size else np.nan)
