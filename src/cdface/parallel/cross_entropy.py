"""Softmax cross-entropy over logits whose columns (classes) are split across ranks.

Every rank holds the logits of the whole gathered batch against its own classes. The row maximum is
all-reduced with MAX, the sum of exponentials with SUM, and the target logit comes from the one rank that
owns the class (SUM of zeros elsewhere), so each row's loss is exactly log-sum-exp minus target over all
classes. Each rank returns the losses of its own rows only; in backward the per-row gradients are
averaged over ranks (each rank knows only its rows' weights), which is what DDP's gradient averaging
would give a replicated head.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import ProcessGroup

from cdface.collectives import all_reduce, rank_and_world

__all__ = ["sharded_cross_entropy"]


class _ShardedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        logits: Tensor,
        local_target: Tensor,
        row_start: int,
        row_count: int,
        group: ProcessGroup | None,
    ) -> Tensor:
        rows = logits.shape[0]
        owned = local_target >= 0
        safe_target = local_target.clamp_min(0).unsqueeze(1)
        with torch.no_grad():
            row_max = logits.max(dim=1).values
            all_reduce(row_max, dist.ReduceOp.MAX, group)
            probs = (logits - row_max.unsqueeze(1)).exp_()
            stats = torch.stack([probs.sum(dim=1), torch.zeros(rows, dtype=probs.dtype, device=probs.device)])
            target_logit = logits.gather(1, safe_target).squeeze(1)
            stats[1] = torch.where(owned, target_logit - row_max, torch.zeros_like(row_max))
            all_reduce(stats, dist.ReduceOp.SUM, group)
            sum_exp, shifted_target = stats[0], stats[1]
            probs.div_(sum_exp.unsqueeze(1))
            loss = sum_exp.log() - shifted_target
        ctx.save_for_backward(probs, local_target)
        ctx.row_start, ctx.group = row_start, group
        return loss[row_start : row_start + row_count]

    @staticmethod
    def backward(ctx, grad_local: Tensor) -> tuple[Tensor, None, None, None, None]:
        probs, local_target = ctx.saved_tensors
        _, world = rank_and_world(ctx.group)
        row_grad = grad_local.new_zeros(probs.shape[0])
        row_grad[ctx.row_start : ctx.row_start + grad_local.shape[0]] = grad_local
        all_reduce(row_grad, dist.ReduceOp.SUM, ctx.group)
        row_grad.div_(world)
        grad = probs * row_grad.unsqueeze(1)
        # minus the row's gradient at its target column, on the rank that owns the class: a scatter of zeros
        # elsewhere (fixed shape; selecting the owned rows first would read their count on the host)
        owned = local_target >= 0
        own_grad = torch.where(owned, row_grad, torch.zeros_like(row_grad)).unsqueeze(1)
        grad.scatter_add_(1, local_target.clamp_min(0).unsqueeze(1), -own_grad)
        return grad, None, None, None, None


def sharded_cross_entropy(
    logits: Tensor,
    local_target: Tensor,
    row_start: int,
    row_count: int,
    group: ProcessGroup | None = None,
) -> Tensor:
    """Per-row cross-entropy of rows ``[row_start, row_start + row_count)`` over all shards' classes.

    logits: (N, C_shard) this rank's columns for the whole gathered batch (margin already applied).
    local_target: (N,) column of each row's class on this shard, or -1 if another rank owns it.
    Every rank of ``group`` must call this (and later backward) with the same N, as with any collective.
    Gradients: each rank's weight gradient is the average over ranks of the gradients of every rank's
    own-row losses, i.e. what DDP would give a replicated head.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return _ShardedCrossEntropy.apply(logits, local_target, row_start, row_count, group)
