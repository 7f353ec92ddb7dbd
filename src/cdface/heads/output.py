"""What a margin head returns: one contract for a replicated head and a sharded one (any world size)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class HeadOutput:
    """The loss of this rank's rows, plus what the trainer reads from one forward pass.

    loss: scalar, mean cross-entropy of this rank's rows with the margin applied (+ the margin's aux loss);
        on a sharded head the cross-entropy is completed across the ranks (see ``ShardedMarginHead``).
    target_cosine: (B,) cos(x_i, W_{y_i}), detached: the per-sample difficulty score (NaN for label -1).
    correct: (B,) bool, detached: the row's largest cosine is its own class's (train-batch accuracy).
    logits: the margin logits: (B, C) for a replicated head; for a sharded one this shard's block
        (B_global, S) over its S (sampled) centres. For inspection; ``loss`` is what to train on.
    cosine: (B, C) cos(x_i, W_j) without margin (same autograd graph); None for a sharded head.
    aux_loss: a regulariser already weighted (MagFace's g), already inside ``loss``, or None.
    losses: (B,) per-row cross-entropy (with graph), or None.
    sampled_index: (S,) shard rows Partial FC used this step, or None when every row was used.
    """

    loss: Tensor
    target_cosine: Tensor
    correct: Tensor
    logits: Tensor
    cosine: Tensor | None = None
    aux_loss: Tensor | None = None
    losses: Tensor | None = None
    sampled_index: Tensor | None = None
