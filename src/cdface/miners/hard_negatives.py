"""Pick the negative class centres that the CD loss pushes hard samples away from: one miner for any head.

As the paper's repository: for each selected class y, one batch row of class y (the last occurrence, as
the reference's label -> row dict keeps it; ``last_row_of_class`` is that rule, the only copy) ranks all
classes by cosine with its target column excluded; its top NP classes are y's hard negatives. The shared
pool is the union of the K sets minus the K selected classes. With ``per_class`` each class keeps its own
(K, NP) list, excluding only its own class (another selected class is a legitimate negative for y; in the
shared pool the selected classes must go because every hard sample is pushed from every pooled centre,
its own included).

``mine_hard_negatives`` works on the centres a rank holds: all of them (a replicated head) or a row shard
(a sharded head, where a local top-k per shard is merged into the global top-k). It never reads a device
value on the host (no ``nonzero``/``unique``/``item``): the pool keeps a fixed size K*NP with a mask, so a
training step on a GPU does not wait for it. ``hard_negative_centres`` is the same selection on a (B, C)
cosine matrix, for analysis and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributed import ProcessGroup


@dataclass
class HardNegatives:
    """ids: (K, NP) per class, or (K*NP,) sorted pool candidates; -1 where a class has fewer than NP negatives.
    centres: the matching rows of W ((K, NP, D) or (K*NP, D)), detached, unnormalised (the CD loss normalises),
    zero where ``mask`` is False. mask: which entries count: valid ids, and in a pool each class once and no
    selected class."""

    ids: Tensor
    centres: Tensor
    mask: Tensor

    def pool_ids(self) -> Tensor:
        """The pool as sorted unique class ids (P,) (reads the mask on the host: for inspection, not the step)."""
        return self.ids[self.mask]


def last_row_of_class(labels: Tensor, classes: Tensor) -> Tensor:
    """(K,) index of the last batch row of each class in ``classes`` (the reference's query choice).

    Raises ValueError when a class has no row (a host read: the sampler and tests call it, not the step).
    """
    labels = torch.as_tensor(labels).reshape(-1)
    classes = torch.as_tensor(classes, device=labels.device).reshape(-1)
    matches = labels.reshape(1, -1) == classes.reshape(-1, 1)
    if not bool(matches.any(dim=1).all()):
        raise ValueError(f"selected classes {classes[~matches.any(dim=1)].tolist()} have no row in the batch")
    positions = torch.arange(labels.numel(), device=labels.device)
    return torch.where(matches, positions, -1).amax(dim=1)


def top_negatives(cosine: Tensor, classes: Tensor, k: int, class_start: int = 0) -> tuple[Tensor, Tensor]:
    """Top-``k`` (values, global ids) of each row of ``cosine`` (K, C_block), its own class excluded.

    Column j of the block is class ``class_start + j``; rows whose class lies outside the block exclude
    nothing. Padded with (-inf, -1) when the block has fewer than ``k`` candidates.
    """
    num_cols = cosine.shape[1]
    own = classes.reshape(-1, 1).long() - class_start
    on_block = (own >= 0) & (own < num_cols)
    col = own.clamp(0, max(num_cols - 1, 0))
    if num_cols:
        # masked scatter without a host read: rows whose class is elsewhere write their own value back
        cosine = cosine.scatter(1, col, torch.where(on_block, float("-inf"), cosine.gather(1, col)))
    k_block = min(k, num_cols)
    values, local_ids = cosine.topk(k_block, dim=1)
    ids = torch.where(torch.isinf(values), -1, local_ids + class_start)
    if k_block < k:
        pad = k - k_block
        values = torch.cat([values, values.new_full((values.shape[0], pad), float("-inf"))], dim=1)
        ids = torch.cat([ids, ids.new_full((ids.shape[0], pad), -1)], dim=1)
    return values, ids


def pool(ids: Tensor, selected: Tensor) -> tuple[Tensor, Tensor]:
    """The shared pool of (K, NP) per-class ids: (sorted candidates (K*NP,), mask of each class once, valid,
    not selected). Fixed size, no host read."""
    ordered = ids.reshape(-1).sort().values
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return ordered, first & (ordered >= 0) & ~torch.isin(ordered, selected.reshape(-1))


@torch.no_grad()
def mine_hard_negatives(
    queries: Tensor,
    classes: Tensor,
    weight: Tensor,
    num_negatives: int,
    per_class: bool = False,
    class_start: int = 0,
    num_classes: int | None = None,
    group: ProcessGroup | None = None,
    all_ranks: bool = False,
    counts: list[int] | None = None,
) -> HardNegatives:
    """Hard-negative centres of this rank's selected ``classes`` (K_local,) queried by ``queries`` (K_local, D).

    ``weight`` holds this rank's centres: rows [class_start, class_start + len) of ``num_classes`` (a shard),
    or all of them (``num_classes`` None or equal: replicated, nothing to merge). Under torch.distributed every
    rank of ``group`` calls this with its own classes (K_local may differ, and may be 0); the queries of all
    ranks are gathered. Returns per class (``per_class``) this rank's (K_local, NP) lists (``all_ranks``: every
    rank's, in rank order), else the pool over all ranks' classes (the same on every rank). NP is
    min(num_negatives, num_classes - 1). ``counts``: every rank's K_local when the caller knows them (no
    exchange of the sizes, which would be a host read).
    """
    # imported here: the parallel package imports this module
    from cdface.collectives import all_gather_rows, all_reduce, rank_and_world
    from cdface.embedding import normalized_cosine

    num_classes = weight.shape[0] if num_classes is None else int(num_classes)
    sharded = weight.shape[0] < num_classes
    classes = classes.to(weight.device).long().reshape(-1)
    rank, world = rank_and_world(group)
    all_queries, counts = all_gather_rows(queries.to(weight.dtype), group, counts)
    all_classes, _ = all_gather_rows(classes, group, counts)
    k = max(0, min(num_negatives, num_classes - 1))
    cosine = normalized_cosine(all_queries, weight)  # (K_all, C_held), as the heads compute it
    values, ids = top_negatives(cosine, all_classes, k, class_start)
    if sharded and world > 1:  # each shard's top-k, then the global top-k of the candidates
        one_each = [1] * world  # one block per rank: known, so the gather does not exchange (and read) counts
        all_values, _ = all_gather_rows(values.unsqueeze(0), group, one_each)  # (world, K_all, k)
        all_ids, _ = all_gather_rows(ids.unsqueeze(0), group, one_each)
        all_values = all_values.permute(1, 0, 2).reshape(values.shape[0], -1)
        all_ids = all_ids.permute(1, 0, 2).reshape(ids.shape[0], -1)
        ids = all_ids.gather(1, all_values.topk(k, dim=1).indices)
    ids, mask = (ids, ids >= 0) if per_class else pool(ids, all_classes)
    local = ids - class_start
    held = mask & (local >= 0) & (local < weight.shape[0])
    rows = weight[local.clamp(0, max(weight.shape[0] - 1, 0))] * held.unsqueeze(-1).to(weight.dtype)
    if sharded:  # every row lives on one rank: the others add zeros (same shape on every rank)
        rows = all_reduce(rows, torch.distributed.ReduceOp.SUM, group)
    if per_class and not all_ranks:
        start, end = sum(counts[:rank]), sum(counts[: rank + 1])
        ids, mask, rows = ids[start:end], mask[start:end], rows[start:end]
    return HardNegatives(ids=ids, centres=rows, mask=mask)


def hard_negative_centres(
    cosine: Tensor,
    labels: Tensor,
    classes: Tensor,
    num_negatives: int = 500,
    per_class: bool = False,
) -> Tensor:
    """Class ids of hard negatives from a (B, C) cosine matrix: sorted unique (P,), or (K, NP) with ``per_class``.

    ``labels`` (B,), ``classes`` (K,) selected class ids, each present in ``labels``. NP is clamped to C - 1.
    The same selection as ``mine_hard_negatives`` (for analysis and tests; it reads the pool on the host).
    """
    cosine = cosine.detach()
    labels = labels.to(cosine.device).long()
    classes = torch.as_tensor(classes, device=cosine.device).long().reshape(-1)
    k = max(0, min(num_negatives, cosine.shape[1] - 1))
    _, ids = top_negatives(cosine.index_select(0, last_row_of_class(labels, classes)), classes, k)
    if per_class:
        return ids
    ordered, mask = pool(ids, classes)
    return ordered[mask]
