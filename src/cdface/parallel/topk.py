"""The paper's hard-negative centres when the centres are sharded: local top-k, then a global top-k.

Same selection as ``cdface.miners.hard_negative_centres`` on the full (B, C) cosine matrix: for each
selected class y, one query embedding of y ranks every class except y by cosine and keeps the top NP
(NP clamped to C - 1). Every rank gathers all ranks' (query, class) pairs, takes the top NP of its own
shard (target excluded), the candidates (values and global ids) are all-gathered, the global top NP
is kept, and the chosen centre rows are summed into place from their owners. Centres are detached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import ProcessGroup

from cdface.heads import normalized_cosine

from .comm import all_gather_rows, all_reduce, rank_and_world

__all__ = ["HardNegatives", "distributed_hard_negatives", "last_row_of_class"]


@dataclass
class HardNegatives:
    """ids: (K_local, NP) per class, or the shared pool (P,) sorted; centres: the matching rows of W
    ((K_local, NP, D) or (P, D)), detached, unnormalised (the CD loss normalises)."""

    ids: Tensor
    centres: Tensor


def last_row_of_class(labels: Tensor, classes: Tensor) -> Tensor:
    """(K,) index of the last batch row of each class in ``classes`` (the reference's query choice)."""
    matches = labels.reshape(1, -1) == classes.reshape(-1, 1)
    if not bool(matches.any(dim=1).all()):
        raise ValueError(f"selected classes {classes[~matches.any(dim=1)].tolist()} have no row in the batch")
    positions = torch.arange(labels.numel(), device=labels.device)
    return torch.where(matches, positions, -1).amax(dim=1)


@torch.no_grad()
def distributed_hard_negatives(
    queries: Tensor,
    classes: Tensor,
    weight_shard: Tensor,
    class_start: int,
    num_classes: int,
    num_negatives: int,
    per_class: bool = False,
    group: ProcessGroup | None = None,
    all_ranks: bool = False,
) -> HardNegatives:
    """Hard-negative centres of this rank's selected ``classes`` (K_local,) with ``queries`` (K_local, D).

    With ``per_class`` each of this rank's classes gets its own NP ids (with ``all_ranks``: every rank's
    classes, in rank order, (K_all, NP)); otherwise the pool is the union over every rank's classes minus
    all selected classes (the same on every rank). Every rank of ``group`` must call this (K_local may
    differ between ranks, and may be 0).
    """
    classes = classes.to(weight_shard.device).long().reshape(-1)
    rank, _ = rank_and_world(group)
    all_queries, counts = all_gather_rows(queries.to(weight_shard.dtype), group)
    all_classes, _ = all_gather_rows(classes, group, counts)
    k = max(0, min(num_negatives, num_classes - 1))
    ids = _global_topk(all_queries, all_classes, weight_shard, class_start, k, group)  # (K_all, k)
    if per_class:  # rows are collected for every rank's classes (same shape everywhere), then sliced
        centres = _collect_rows(ids, weight_shard, class_start, group)
        if all_ranks:
            return HardNegatives(ids=ids, centres=centres)
        start = sum(counts[:rank])
        return HardNegatives(ids=ids[start : start + counts[rank]], centres=centres[start : start + counts[rank]])
    chosen = torch.zeros(num_classes, dtype=torch.bool, device=ids.device)
    chosen[ids.reshape(-1)] = True
    chosen[all_classes] = False
    ids = torch.nonzero(chosen).reshape(-1)
    return HardNegatives(ids=ids, centres=_collect_rows(ids, weight_shard, class_start, group))


def _global_topk(
    queries: Tensor, classes: Tensor, weight_shard: Tensor, class_start: int, k: int, group: ProcessGroup | None
) -> Tensor:
    num_local = weight_shard.shape[0]
    cosine = normalized_cosine(queries, weight_shard)  # (K_all, C_local)
    own = classes - class_start
    on_shard = (own >= 0) & (own < num_local)
    rows = torch.nonzero(on_shard).reshape(-1)
    cosine[rows, own[rows]] = float("-inf")
    k_local = min(k, num_local)
    values, local_ids = cosine.topk(k_local, dim=1)
    ids = torch.where(torch.isinf(values), -1, local_ids + class_start)
    if k_local < k:  # pad so every rank contributes the same shape
        pad = k - k_local
        values = torch.cat([values, values.new_full((values.shape[0], pad), float("-inf"))], dim=1)
        ids = torch.cat([ids, ids.new_full((ids.shape[0], pad), -1)], dim=1)
    _, world = rank_and_world(group)
    if world == 1:
        return ids
    all_values, _ = all_gather_rows(values.unsqueeze(0), group)  # (world, K_all, k)
    all_ids, _ = all_gather_rows(ids.unsqueeze(0), group)
    all_values = all_values.permute(1, 0, 2).reshape(values.shape[0], -1)
    all_ids = all_ids.permute(1, 0, 2).reshape(ids.shape[0], -1)
    best = all_values.topk(k, dim=1).indices
    return all_ids.gather(1, best)


def _collect_rows(ids: Tensor, weight_shard: Tensor, class_start: int, group: ProcessGroup | None) -> Tensor:
    """Rows ``ids`` (any shape) of the full centre matrix: each owner fills its rows, SUM over ranks."""
    local = ids - class_start
    owned = (local >= 0) & (local < weight_shard.shape[0])
    out = weight_shard.new_zeros((*ids.shape, weight_shard.shape[1]))
    out[owned] = weight_shard[local[owned]]
    return all_reduce(out, dist.ReduceOp.SUM, group)
