"""A few collectives of the training loop that are no-ops on one process.

Joining torchrun's process group (``DistInfo``, ``init_distributed``) lives below train/ and inference/, in
``cdface.process_group``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from cdface.process_group import DistInfo


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate equally-shaped tensors of every rank along dim 0 (rank order)."""
    if not info.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def gather_objects(obj: object, info: DistInfo) -> list:
    """Every rank's `obj` (small, picklable state of our own making), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def own_entry(per_rank: object, info: DistInfo) -> object | None:
    """This rank's entry of a per-rank list saved with the same world size; None when it was another size."""
    if isinstance(per_rank, list):
        return per_rank[info.rank] if len(per_rank) == info.world_size else None
    return per_rank  # a single-process checkpoint written before per-rank lists
