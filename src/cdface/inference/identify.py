"""Open-set identification over a gallery of several images per identity: per-identity scores and the
"unknown" answer.

An identity's score for a query is the max (default) or the mean of the cosines between the query and that
identity's gallery images:

- max: the query is that person if it matches any of their images well; with one image per identity it is the
  image search. It rewards large galleries (more images, more chances for an impostor's near match).
- mean: the average over the identity's images; steadier against one odd gallery image, but one poor image
  (blur, profile) pulls a genuine match down.

Both are computed in one pass over the gallery in chunks (cosines of a chunk scattered into a (queries,
identities) array with ``scatter_reduce`` / ``index_add``), on the GPU when present.

A query is answered "unknown" when its best score does not reach the threshold (``--unknown-below T``: known
when score >= T; a threshold at a FAR: known when score >= it). A FAR threshold is calibrated on 1:1 pairs:
against a gallery of N identities a stranger gets N chances, so the rate at which strangers are
misidentified grows with N (about N x FAR for independent impostor scores, with the max rule).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cdface.errors import FormatError
from cdface.inference.loading import resolve_device

__all__ = ["gallery_identities", "identity_scores", "open_set_answers"]


def gallery_identities(names: list[str] | None, per_row: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(label of each gallery row (G,) int64, identity names) from `per_row` (one identity per row, e.g. the
    lines of --gallery-labels) or, by default, the folder of each gallery path (``alice/1.jpg`` -> ``alice``).
    FormatError when neither gives one identity per row."""
    if per_row is not None:
        per_row = [label.strip() for label in per_row]
    else:
        if names is None:
            raise FormatError("--gallery", None, "gallery row names (<gallery>.paths.txt, as cdface embed writes) or "
                              "--gallery-labels FILE to tell the identities apart")
        per_row = [Path(name.replace("\\", "/")).parent.name for name in names]
        if any(not p for p in per_row):
            first = names[per_row.index("")]
            raise FormatError("--gallery", None, f"gallery paths inside identity folders (alice/1.jpg), got {first}; "
                              "give --gallery-labels FILE")
    identities, labels = np.unique(np.array(per_row, dtype=object), return_inverse=True)
    return labels.astype(np.int64).reshape(-1), [str(v) for v in identities]


def identity_scores(queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray, num_identities: int,
                    reduce: str = "max", chunk_size: int = 65536, device: str | None = None) -> np.ndarray:
    """(Q, I) float32: each query's score per identity, the max or mean cosine over the identity's gallery rows.

    Rows are L2-normalised here; a non-finite similarity counts as -inf for max and makes the mean -inf (a
    broken gallery row never lifts an identity). `gallery` may be memory-mapped (read in chunks).
    """
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    dev = resolve_device(device)
    q = torch.nn.functional.normalize(torch.from_numpy(np.array(queries, dtype=np.float32)).to(dev), dim=1)
    lab = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(dev)
    if reduce == "max":
        out = torch.full((len(q), num_identities), -float("inf"), device=dev)
    else:
        out = torch.zeros((len(q), num_identities), dtype=torch.float64, device=dev)
    for g0 in range(0, len(gallery), chunk_size):
        g = torch.from_numpy(np.array(gallery[g0:g0 + chunk_size], dtype=np.float32)).to(dev)
        sim = q @ torch.nn.functional.normalize(g, dim=1).T
        sim.nan_to_num_(nan=-float("inf"), posinf=-float("inf"))
        idx = lab[g0:g0 + len(g)].expand(len(q), -1)
        if reduce == "max":
            out.scatter_reduce_(1, idx, sim, reduce="amax", include_self=True)
        else:
            out.index_add_(1, lab[g0:g0 + len(g)], sim.double())
    if reduce == "mean":
        counts = torch.bincount(lab, minlength=num_identities).clamp_min(1)
        out = out / counts
    return out.float().cpu().numpy()


def open_set_answers(known: np.ndarray, names: list[str], low_quality: np.ndarray | None = None) -> list[str]:
    """Per query: the best match's name, "unknown" when `known` is False, "low quality" where flagged."""
    out = np.where(known, np.array(names, dtype=object), "unknown")
    if low_quality is not None:
        out = np.where(low_quality, "low quality", out)
    return [str(v) for v in out]
