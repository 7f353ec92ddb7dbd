"""Exact top-k cosine search of queries against a large gallery, in chunks with a running top-k.

The gallery may be millions of rows (a memory-mapped .npy works): it is streamed in chunks, each chunk's
scores are merged into the running best k, so memory stays O(queries x (k + chunk)). The result is exact:
the same scores as a full sort of the similarity matrix (the order among exactly equal scores is not
specified). faiss (IndexFlatIP, also exact) is used instead when asked for and importable.

A similarity that is not finite (a NaN or inf feature row) ranks below every finite one and is returned as
-inf: ``torch.topk`` would otherwise put NaN first, so one broken gallery row would be every query's best hit.
"""

from __future__ import annotations

import numpy as np
import torch

from cdface.inference.loading import resolve_device

__all__ = ["topk_search", "faiss_available"]


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def topk_search(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int = 5,
    chunk_size: int = 65536,
    query_chunk: int = 4096,
    normalize: bool = True,
    device: str | torch.device | None = None,
    backend: str = "torch",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine similarities (Q, k) float32 and gallery indices (Q, k) int64, best first.

    `normalize=False` scores raw inner products. `backend`: "torch" (exact, chunked, GPU when present),
    "faiss", or "auto" (faiss when importable).
    """
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"need (Q, D) queries and (G, D) gallery, got {queries.shape} and {gallery.shape}")
    k = min(int(k), len(gallery))
    if k <= 0 or len(queries) == 0:
        return np.zeros((len(queries), max(k, 0)), np.float32), np.zeros((len(queries), max(k, 0)), np.int64)
    if backend == "auto":
        backend = "faiss" if faiss_available() else "torch"
    if backend == "faiss":
        return _faiss_search(queries, gallery, k, chunk_size, normalize)
    if backend != "torch":
        raise ValueError(f"backend must be 'torch', 'faiss' or 'auto', got {backend!r}")
    dev = resolve_device(device)
    scores, indices = [], []
    for q0 in range(0, len(queries), query_chunk):
        q = _to_tensor(queries[q0 : q0 + query_chunk], dev, normalize)
        best_s = torch.empty((len(q), 0), device=dev)  # no sentinel rows: a -inf hit is still a real row
        best_i = torch.empty((len(q), 0), dtype=torch.int64, device=dev)
        for g0 in range(0, len(gallery), chunk_size):
            g = _to_tensor(gallery[g0 : g0 + chunk_size], dev, normalize)
            sim = q @ g.T
            sim.nan_to_num_(nan=-float("inf"), posinf=-float("inf"))  # in place: one pass, no mask
            kk = min(k, sim.shape[1])
            s, i = torch.topk(sim, kk, dim=1)
            merged_s = torch.cat([best_s, s], dim=1)
            merged_i = torch.cat([best_i, i + g0], dim=1)
            best_s, pos = _stable_topk(merged_s, min(k, merged_s.shape[1]))
            best_i = merged_i.gather(1, pos)
        scores.append(best_s.cpu().numpy())
        indices.append(best_i.cpu().numpy())
    return np.concatenate(scores).astype(np.float32), np.concatenate(indices).astype(np.int64)


def _stable_topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k along dim 1 of a small (Q, k + k) merge; a stable sort keeps the running best first on ties."""
    s, i = torch.sort(x, dim=1, descending=True, stable=True)
    return s[:, :k], i[:, :k]


def _to_tensor(x: np.ndarray, device: torch.device, normalize: bool) -> torch.Tensor:
    t = torch.from_numpy(np.array(x, dtype=np.float32)).to(device)  # a copy: memmaps are read-only
    return torch.nn.functional.normalize(t, dim=1) if normalize else t


def _faiss_search(
    queries: np.ndarray, gallery: np.ndarray, k: int, chunk_size: int, normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(gallery.shape[1])
    for g0 in range(0, len(gallery), chunk_size):
        chunk = np.ascontiguousarray(gallery[g0 : g0 + chunk_size], dtype=np.float32)
        if normalize:
            faiss.normalize_L2(chunk)
        index.add(chunk)
    q = np.ascontiguousarray(queries, dtype=np.float32).copy()
    if normalize:
        faiss.normalize_L2(q)
    scores, indices = index.search(q, k)
    return scores.astype(np.float32), indices.astype(np.int64)
