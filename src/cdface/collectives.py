"""Collectives for the sharded head and the hard-negative miner: group queries and row gathers that work on one
process too.

Everything takes an optional process ``group``; without an initialised process group the world is one
rank and every collective is the identity, so the sharded head also runs (and is tested) undistributed.
Row gathers accept a different number of rows per rank (the last batch of an epoch): sizes are exchanged
first and the rows padded to the largest count for the collective.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import ProcessGroup

__all__ = [
    "rank_and_world",
    "is_distributed",
    "row_counts",
    "all_gather_rows",
    "gather_rows_with_grad",
    "all_reduce",
]


def is_distributed(group: ProcessGroup | None = None) -> bool:
    """True when a process group is up and has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def rank_and_world(group: ProcessGroup | None = None) -> tuple[int, int]:
    """(rank within group, group size); (0, 1) without an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def all_reduce(tensor: Tensor, op: dist.ReduceOp.RedOpType, group: ProcessGroup | None = None) -> Tensor:
    """In-place all-reduce that is a no-op on one rank; returns ``tensor``."""
    if is_distributed(group):
        dist.all_reduce(tensor, op=op, group=group)
    return tensor


def row_counts(rows: int, device: torch.device, group: ProcessGroup | None = None) -> list[int]:
    """Every rank's row count, in rank order ([rows] on one process)."""
    if not is_distributed(group):
        return [rows]
    _, world = rank_and_world(group)
    local = torch.tensor([rows], dtype=torch.int64, device=device)
    counts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(counts, local, group=group)
    return [int(c.item()) for c in counts]


def all_gather_rows(
    tensor: Tensor, group: ProcessGroup | None = None, counts: list[int] | None = None
) -> tuple[Tensor, list[int]]:
    """Concatenate every rank's ``tensor`` along dim 0 in rank order (no gradient).

    Returns the gathered tensor and the per-rank row counts (which may differ; pass ``counts`` when
    already known to skip exchanging them).
    """
    if not is_distributed(group):
        return tensor, [tensor.shape[0]]
    if counts is None:
        counts = row_counts(tensor.shape[0], tensor.device, group)
    most = max(counts)
    padded = tensor
    if tensor.shape[0] != most:
        padded = tensor.new_zeros((most, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:n] for part, n in zip(parts, counts)]), counts


class _GatherRowsWithGrad(torch.autograd.Function):
    """Forward: all-gather rows. Backward: sum the gathered gradient over ranks, keep this rank's rows.

    Each rank's graph only sees its own class shard, so the gradient it holds for a gathered row is a
    partial sum over classes; summing over ranks completes it. ``grad_scale`` then rescales it (the
    sharded head uses the world size, see ``ShardedMarginHead``).
    """

    @staticmethod
    def forward(ctx, tensor: Tensor, group: ProcessGroup | None, counts: list[int], grad_scale: float) -> Tensor:
        gathered, _ = all_gather_rows(tensor, group, counts)
        rank, _ = rank_and_world(group)
        ctx.group = group
        ctx.grad_scale = grad_scale
        ctx.start = sum(counts[:rank])
        ctx.rows = counts[rank]
        return gathered

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        grad = grad.contiguous().clone()
        all_reduce(grad, dist.ReduceOp.SUM, ctx.group)
        mine = grad[ctx.start : ctx.start + ctx.rows]
        if ctx.grad_scale != 1.0:
            mine = mine * ctx.grad_scale
        return mine, None, None, None


def gather_rows_with_grad(
    tensor: Tensor, group: ProcessGroup | None = None, grad_scale: float = 1.0, counts: list[int] | None = None
) -> tuple[Tensor, list[int]]:
    """All-gather rows with a backward pass; returns (gathered, per-rank row counts). Pass ``counts`` when
    known (no exchange of the sizes, which reads them on the host)."""
    if not is_distributed(group):
        return tensor, [tensor.shape[0]]
    if counts is None:
        counts = row_counts(tensor.shape[0], tensor.device, group)
    return _GatherRowsWithGrad.apply(tensor, group, counts, grad_scale), counts
