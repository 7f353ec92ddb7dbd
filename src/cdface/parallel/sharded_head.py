"""Model-parallel margin head: class centres split across ranks, optional Partial FC sampling.

Each rank holds C/world centres (``shard_range``). Embeddings and labels are all-gathered, each rank
computes the cosines of the whole gathered batch against its own centres, applies the shared margin
module (rows whose class lives elsewhere get label -1, hence no margin) and the cross-entropy is
completed across ranks (``sharded_cross_entropy``). The result is the replicated-head-plus-DDP result:

* ``loss`` on rank r is the mean loss of rank r's own rows, as a full head on that rank would give;
* ``embeddings.grad`` is the gradient of that loss (the gather's backward sums the per-shard partial
  gradients over ranks, then multiplies by the world size to undo the averaging in the cross-entropy);
* ``weight.grad`` is this shard's rows of the full head's gradient averaged over ranks (what DDP gives).

So the backbone stays under DDP and the head must NOT be wrapped in DDP. Every rank must run forward and
backward each step (collectives). Margins whose non-target logits depend on the row's target cosine or
on batch statistics of target cosines (CurricularFace) are refused; AdaFace and MagFace get the gathered
norms, so AdaFace's running norm statistics are over the global batch (like SyncBatchNorm).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed import ProcessGroup

from cdface.collectives import all_gather_rows, all_reduce, gather_rows_with_grad, rank_and_world
from cdface.errors import ConfigError
from cdface.heads import CurricularFaceMargin, HeadOutput, Margin, create_margin, normalized_cosine
from cdface.miners.hard_negatives import HardNegatives, mine_hard_negatives

from .cross_entropy import sharded_cross_entropy
from .sampling import sample_centres
from .sharding import num_sampled, shard_range

__all__ = ["ShardedMarginHead"]


class ShardedMarginHead(nn.Module):
    """A margin head whose (num_classes, D) centres are split by rows over the ranks of ``group``."""

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        margin: Margin | str,
        sample_rate: float = 1.0,
        group: ProcessGroup | None = None,
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
        rows_per_rank: int | None = None,
    ) -> None:
        """``rows_per_rank``: every rank always passes this many rows (the trainer's local batch); the forward
        then skips exchanging the row counts (a host read per step)."""
        super().__init__()
        self.rows_per_rank = rows_per_rank
        self.margin = create_margin(margin) if isinstance(margin, str) else margin
        if isinstance(self.margin, CurricularFaceMargin):
            raise ConfigError(
                "curricularface cannot be sharded: its non-target logits depend on each row's target cosine "
                "and its running t on all target cosines; use arcface/cosface/combined/adaface/magface, "
                "or the replicated MarginHead"
            )
        self.group = group
        self.rank, self.world = rank_and_world(group)
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)
        self.class_start, self.class_end = shard_range(self.num_classes, self.rank, self.world)
        self.sample_rate = float(sample_rate)
        self.num_sample = num_sampled(self.num_local, self.sample_rate)
        self.generator = generator
        self.weight = nn.Parameter(torch.empty(self.num_local, self.embedding_size))
        nn.init.normal_(self.weight, std=init_std)

    @property
    def num_local(self) -> int:
        return self.class_end - self.class_start

    def load_full_weight(self, full_weight: Tensor) -> None:
        """Copy this rank's rows of a full (num_classes, D) centre matrix into the shard."""
        if tuple(full_weight.shape) != (self.num_classes, self.embedding_size):
            raise ConfigError(
                f"full weight has shape {tuple(full_weight.shape)}, "
                f"expected ({self.num_classes}, {self.embedding_size})"
            )
        with torch.no_grad():
            self.weight.copy_(full_weight[self.class_start : self.class_end])

    def sampling_state(self) -> Tensor | None:
        """This rank's Partial FC generator state (a uint8 tensor), for checkpoints; None without a generator."""
        return self.generator.get_state() if self.generator is not None else None

    def load_sampling_state(self, state: Tensor | None) -> None:
        """Continue the sampling stream saved by ``sampling_state`` (same rank, same world size)."""
        if state is not None and self.generator is not None:
            self.generator.set_state(state)

    def forward(self, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        """One step on this rank's ``embeddings`` (B_local, D) and global class ids ``labels`` (B_local,)."""
        labels = labels.to(embeddings.device).long()
        known = [self.rows_per_rank] * self.world if embeddings.shape[0] == self.rows_per_rank else None
        gathered, counts = gather_rows_with_grad(embeddings, self.group, grad_scale=float(self.world), counts=known)
        all_labels, _ = all_gather_rows(labels, self.group, counts)
        # checked on the device (a host read here would stall every step's launch queue)
        in_range = ((all_labels >= 0) & (all_labels < self.num_classes)).all()
        torch._assert_async(in_range, f"labels must be class ids in [0, {self.num_classes})")
        row_start, row_count = sum(counts[: self.rank]), counts[self.rank]

        local = all_labels - self.class_start
        local = torch.where((local >= 0) & (local < self.num_local), local, torch.full_like(local, -1))
        weight, index = self.weight, None
        if self.training and self.num_sample < self.num_local:
            index, local = sample_centres(local, self.num_local, self.num_sample, self.generator)
            weight = self.weight[index]

        norms = gathered.float().norm(dim=1, keepdim=True) if self.margin.needs_norms else None
        cosine = normalized_cosine(gathered, weight)
        logits = self.margin(cosine, local, norms)
        losses = sharded_cross_entropy(logits, local, row_start, row_count, self.group)
        full_target = self._target_cosine(cosine, local)
        target = full_target[row_start : row_start + row_count]
        correct = self._correct(cosine, local, full_target)[row_start : row_start + row_count]
        # the regulariser acts on this rank's rows only: take their norms before the gather, whose
        # backward rescales by the world size for the cross-entropy's sake
        aux = self.margin.aux_loss(embeddings.float().norm(dim=1, keepdim=True)) if self.margin.needs_norms else None
        loss = losses.mean() if aux is None else losses.mean() + aux
        return HeadOutput(
            loss=loss, target_cosine=target, correct=correct, logits=logits, aux_loss=aux, losses=losses,
            sampled_index=index,
        )

    @torch.no_grad()
    def _target_cosine(self, cosine: Tensor, local: Tensor) -> Tensor:
        owned = local >= 0
        mine = cosine.gather(1, local.clamp_min(0).unsqueeze(1)).squeeze(1)
        target = torch.where(owned, mine, torch.zeros_like(mine))
        return all_reduce(target, dist.ReduceOp.SUM, self.group)

    @torch.no_grad()
    def _correct(self, cosine: Tensor, local: Tensor, target: Tensor) -> Tensor:
        """Rows whose own centre beats every other centre of every shard (one all-reduce of B_global maxima)."""
        owned = (local >= 0).unsqueeze(1)
        column = local.clamp_min(0).unsqueeze(1)
        # the own centre set to -inf on the rank that holds it (rows whose class is elsewhere write their value
        # back): a fixed-shape scatter, where a boolean-mask index would read the mask's count on the host
        others = cosine
        if cosine.shape[1]:
            others = cosine.scatter(1, column, torch.where(owned, float("-inf"), cosine.gather(1, column)))
        best_other = others.max(dim=1).values if others.shape[1] else torch.full_like(target, float("-inf"))
        return target > all_reduce(best_other, dist.ReduceOp.MAX, self.group)

    @torch.no_grad()
    def hard_negatives(
        self, queries: Tensor, classes: Tensor, num_negatives: int, per_class: bool = False, all_ranks: bool = False,
        counts: list[int] | None = None,
    ) -> HardNegatives:
        """The paper's hard-negative centres for this rank's selected classes, mined over all shards.

        ``queries`` (K_local, D): one embedding of each selected class (see ``cdface.miners.last_row_of_class``);
        see ``cdface.miners.mine_hard_negatives`` for ``per_class`` and ``all_ranks``.
        """
        return mine_hard_negatives(
            queries,
            classes,
            self.weight.detach(),
            num_negatives,
            per_class=per_class,
            class_start=self.class_start,
            num_classes=self.num_classes,
            group=self.group,
            all_ranks=all_ranks,
            counts=counts,
        )

    def extra_repr(self) -> str:
        return (
            f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
            f"shard=[{self.class_start}, {self.class_end}) of {self.world}, sample_rate={self.sample_rate}"
        )
