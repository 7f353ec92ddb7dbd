"""The core every margin head shares: cosine similarity between embeddings and class centres.

The cosine itself (``normalized_cosine``) is ``cdface.embedding``'s, shared with the hard-negative miner.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cdface.embedding import normalized_cosine


class NormalizedLinear(nn.Module):
    """A bias-free linear layer on unit vectors; ``weight`` is (num_classes, embedding_size)."""

    def __init__(self, embedding_size: int, num_classes: int, init_std: float = 0.01) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=init_std)

    def forward(self, embeddings: Tensor) -> Tensor:
        return normalized_cosine(embeddings, self.weight)

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}"
