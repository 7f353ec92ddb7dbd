"""Mated ranks of probes in a labelled gallery, streamed over gallery chunks (P x G never held at once).

For each probe: the best score among its mates (gallery entries with the probe's label; a negative gallery
label is a distractor and never a mate), the running top-K scores among its non-mates, and from them the rank
of the first mate in the descending ordering of the probe's row: ``1 + #(non-mates scoring above the best
mate)``. Ranks above ``K`` are reported as ``K + 1`` (only ranks <= K are ever asked).

Ties: where a non-mate scores exactly the best mate's score within the top K, the rank depends on how the
reference orders equal scores. ``tie_rule="argsort_reversed"`` re-ranks those rows with ``np.argsort(row)
[::-1]`` as AdaFace's ``DIR_FAR`` (from PFE) does; ``"pessimistic"`` counts every tied non-mate ahead of the
mate (MegaFace devkit); ``"optimistic"`` counts none. IJB 1:N (``cdface.eval.ijb``) ranks single-mate rows
with ``np.argsort(-row)`` and keeps its own ``_mated_ranks``; MegaFace ranks ordered (probe, gallery-image)
pairs against distractors only, a different computation kept in ``cdface.eval.megaface``.

Scores are float32 cosines of L2-normalised rows: numpy's BLAS on the CPU (in one block, ``chunk >= G``, the
very bits of the references' ``np.dot``; in chunks BLAS may round a score's last bit differently), torch on
CUDA when the probe is a CUDA tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["MatedRanks", "mated_ranks", "normalized_rows", "TIE_RULES"]

TIE_RULES = ("argsort_reversed", "pessimistic", "optimistic")


@dataclass(frozen=True)
class MatedRanks:
    """Per-probe outcome of ranking against one gallery (arrays of length P)."""

    rank: np.ndarray  # int64, 1-based rank of the first mate; max_rank + 1 when beyond, or when mateless
    has_mate: np.ndarray  # bool
    best_mate: np.ndarray  # float32 best mate score (-inf when mateless)
    top_score: np.ndarray  # float32 highest score over the whole gallery (mates included)
    max_rank: int


def normalized_rows(x: Any, device: torch.device | None = None) -> torch.Tensor:
    """(N, D) float32 rows divided by their L2 norm; rows already of unit norm (|norm - 1| <= 1e-6, as written
    by AdaFace's or cdface's pipelines) are kept bit for bit, so their scores equal the reference's inner
    products; zero rows stay zero."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    if t.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    t = t.to(device=device if device is not None else t.device, dtype=torch.float32)
    norms = torch.linalg.vector_norm(t.double(), dim=1)
    redo = (norms - 1).abs() > 1e-6
    if bool(redo.any()):
        t = t.clone()
        t[redo] = (t[redo].double() / norms[redo].clamp_min(1e-12)[:, None]).float()
    return t


def _scores(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``p @ g.T`` in float32: numpy's BLAS on the CPU (the ``np.dot`` the references call), torch on CUDA."""
    if p.device.type == "cpu":
        return torch.from_numpy(np.matmul(p.numpy(), g.numpy().T))
    return p @ g.T


def _labels(x: Any, n: int, what: str) -> torch.Tensor:
    arr = x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = arr.reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{what}: {n} labels expected, got {arr.shape[0]}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{what}: integer identity labels expected, got dtype {arr.dtype}")
    return torch.from_numpy(arr.astype(np.int64))


def mated_ranks(
    probe: Any,
    probe_labels: Any,
    gallery: Any,
    gallery_labels: Any,
    max_rank: int,
    tie_rule: str = "argsort_reversed",
    chunk: int = 8192,
) -> MatedRanks:
    """Rank of each probe's first mate among ``gallery`` (see the module docstring).

    ``probe`` (P, D) and ``gallery`` (G, D) are L2-normalised here (float32); labels are integers, a negative
    gallery label marks a distractor. A probe's label may be anything (mateless probes are the open-set
    non-mated searches). Raises ValueError on mismatched shapes or an unknown ``tie_rule``.
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {TIE_RULES}, got {tie_rule!r}")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    device = probe.device if isinstance(probe, torch.Tensor) else None
    p = normalized_rows(probe, device)
    g_all = gallery if isinstance(gallery, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(gallery))
    if g_all.ndim != 2 or g_all.shape[1] != p.shape[1]:
        raise ValueError(f"gallery must be (G, {p.shape[1]}), got {tuple(g_all.shape)}")
    n_p, n_g = p.shape[0], g_all.shape[0]
    if n_g == 0:
        raise ValueError("the gallery is empty")
    lp = _labels(probe_labels, n_p, "probe labels").to(p.device)
    lg_all = _labels(gallery_labels, n_g, "gallery labels")
    k = max_rank
    neg_inf = torch.tensor(-math.inf, device=p.device)
    best_mate = torch.full((n_p,), -math.inf, device=p.device)
    top_nm = torch.full((n_p, k), -math.inf, device=p.device)  # running top-k non-mate scores, descending
    top_any = torch.full((n_p,), -math.inf, device=p.device)
    with torch.no_grad():
        for start in range(0, n_g, chunk):
            g = normalized_rows(g_all[start:start + chunk], p.device)
            lg = lg_all[start:start + chunk].to(p.device)
            s = _scores(p, g)
            mate = (lp[:, None] == lg[None, :]) & (lg >= 0)[None, :]
            top_any = torch.maximum(top_any, s.max(dim=1).values)
            if bool(mate.any()):
                best_mate = torch.maximum(best_mate, torch.where(mate, s, neg_inf).max(dim=1).values)
                s = torch.where(mate, neg_inf, s)
            kk = min(k, s.shape[1])
            merged = torch.cat([top_nm, torch.topk(s, kk, dim=1).values], dim=1)
            top_nm = torch.topk(merged, k, dim=1).values
    best = best_mate.cpu().numpy()
    top = top_nm.cpu().numpy()
    has_mate = np.isfinite(best)
    greater = np.count_nonzero(top > best[:, None], axis=1)
    ties = np.count_nonzero(top == best[:, None], axis=1)
    rank = 1 + greater + (ties if tie_rule == "pessimistic" else 0)
    if tie_rule == "argsort_reversed":
        redo = np.flatnonzero(has_mate & (ties > 0) & (greater < k))
        if redo.size:
            rank[redo] = _argsort_reversed_ranks(p[torch.from_numpy(redo).to(p.device)], lp[redo.tolist()],
                                                 g_all, lg_all, chunk)
    rank = np.where(has_mate, np.minimum(rank, k + 1), k + 1).astype(np.int64)
    return MatedRanks(rank, has_mate, best.astype(np.float32), top_any.cpu().numpy().astype(np.float32), k)


def _argsort_reversed_ranks(p: torch.Tensor, lp: torch.Tensor, g_all: torch.Tensor, lg_all: torch.Tensor,
                            chunk: int) -> np.ndarray:
    """1-based position of the first mate in ``np.argsort(row)[::-1]`` for a few (tied) rows, whole rows."""
    rows = []
    with torch.no_grad():
        for start in range(0, g_all.shape[0], chunk):
            g = normalized_rows(g_all[start:start + chunk], p.device)
            rows.append(_scores(p, g).cpu().numpy())
    scores = np.concatenate(rows, axis=1)
    lg = lg_all.numpy()
    out = np.empty(scores.shape[0], dtype=np.int64)
    for i, row in enumerate(scores):  # only rows with an exact tie near the top: a handful
        order = np.argsort(row)[::-1]
        is_mate = (lg[order] == int(lp[i])) & (lg[order] >= 0)
        out[i] = int(np.argmax(is_mate)) + 1
    return out
