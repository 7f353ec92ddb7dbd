"""IJB template features from per-image features, operation for operation insightface's ``ijb_11.py`` /
``ijb_1n.py`` (``image2template_feature``), vectorised:

1. image features (float32, flip already fused) are optionally L2-normalised (``use_norm_score=False``) and
   multiplied by the detector's faceness score (``use_detector_score``);
2. per (template, media): the images of a media are averaged only when it has more than one image
   (float32, summed in image order, then divided by the count);
3. per template: the media features are summed in ascending media-id order (float32), then cast to
   float64 and L2-normalised (1:1 with sklearn's ``normalize``; 1:N with ``x / sqrt(sum(x**2))``).

Sequential float32 sums are reproduced exactly by adding the k-th member of every group at step k (a loop
over ranks inside groups, never over templates); elementwise IEEE adds, so numpy and torch (CPU or CUDA) give
the same bits up to the float64 normalisation (a few ulps on torch). Numpy input is the reference path; torch
tensors stay on their device (the GPU route of the fast 1:1 path).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cdface.eval._arrays import as_index, is_torch, l2_normalize_rows, to_numpy

__all__ = ["image_features", "template_features", "template_rows"]


def image_features(features: Any, faceness: Any, use_norm_score: bool = True,
                   use_detector_score: bool = True) -> Any:
    """Per-image input features of template pooling (float32), as the reference prepares them.

    A torch tensor stays a tensor on its device (the same elementwise float32 operations); the input is
    never modified (a new array is made only where an operation needs one)."""
    if is_torch(features):
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
        return as_index(idx, x)

    acc = x[index(0, s_starts.size)]
    for k in range(1, max_len):
        n = int(active_counts[k])
        acc[:n] += x[index(k, n)]
    out = acc[as_index(np.argsort(order), x)]  # back to segment order
    return out


def template_features(img_feats: np.ndarray, templates: Any, medias: Any, norm: str = "sklearn"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(unique sorted template ids, (T, D) float64 normalised template features).

    ``norm="sklearn"`` as ijb_11.py (``sklearn.preprocessing.normalize``), ``"plain"`` as ijb_1n.py.
    """
    x = img_feats if is_torch(img_feats) else np.asarray(img_feats)
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
    if is_torch(x):
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


def template_rows(unique_templates: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
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
