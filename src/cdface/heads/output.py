"""What a margin head returns: everything the trainer needs from one forward pass."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class HeadOutput:
    """Logits for the cross-entropy, plus the raw cosines and the difficulty signal.

    logits: (B, C) scaled logits with the margin applied; feed to F.cross_entropy.
    cosine: (B, C) cos(x_i, W_j) without margin (same autograd graph).
    target_cosine: (B,) cos(x_i, W_{y_i}), detached: the per-sample difficulty score (NaN for label -1).
    aux_loss: a regulariser already weighted (MagFace's g), to add to the CE loss, or None.
    correct: (B,) bool, detached: the row's largest cosine is its own class's (train-batch accuracy), or None.
    """

    logits: Tensor
    cosine: Tensor
    target_cosine: Tensor
    aux_loss: Tensor | None = None
    correct: Tensor | None = None
