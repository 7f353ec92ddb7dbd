"""IJB 1:1 reference implementation: float64 pair scores bit-identical to insightface's ``ijb_11.py``.

The reference computes ``np.sum(f1 * f2, -1)`` over float64 template features in chunks of pairs (numpy's
pairwise summation per row); so does ``pair_scores``, about 1 us per pair on a CPU core. With the templates of
``ijb_templates`` and the ROC of ``roc`` (sklearn's ``roc_curve``) it gives insightface's TAR@FAR table. The
fast path (``ijb_fast``) is checked against this module and calls it to rescore the pairs near thresholds.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from cdface.eval._arrays import to_numpy
from cdface.eval.ijb_templates import image_features, template_features, template_rows

__all__ = ["pair_scores", "verification_scores"]


def verification_scores(features: Any, faceness: Any, templates: Any, medias: Any, pairs: Any,
                        use_norm_score: bool = True, use_detector_score: bool = True,
                        num_threads: int | None = None) -> tuple[np.ndarray, int]:
    """(float64 score per pair (P,), number of templates): ``ijb_11.py``'s scores from per-image features
    (M, D), faceness (M,), template and media ids (M,) and template-id pairs (P, 2), on the host.

    Pooling and normalisation are per template, so the images of any set of templates that holds the pairs'
    give the same scores (the fast path rescores a few pairs from their templates' images only).
    """
    x = image_features(to_numpy(features), faceness, use_norm_score, use_detector_score)
    uniq, tmpl = template_features(x, templates, medias, norm="sklearn")
    return pair_scores(tmpl, uniq, pairs, num_threads=num_threads), int(uniq.size)


def pair_scores(template_feats: np.ndarray, unique_templates: np.ndarray, pairs: Any,
                chunk: int = 2048, num_threads: int | None = None) -> np.ndarray:
    """float64 ``sum(f1 * f2)`` per template pair (numpy's pairwise summation, like the reference).

    Pairs are visited sorted by the first template for memory locality, in chunks with reused buffers,
    on ``num_threads`` threads (numpy releases the GIL); each score is computed independently, so the
    numbers do not depend on chunking or threads.
    """
    p = to_numpy(pairs).astype(np.int64).reshape(-1, 2)
    r1 = template_rows(unique_templates, p[:, 0], "pairs")
    r2 = template_rows(unique_templates, p[:, 1], "pairs")
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
