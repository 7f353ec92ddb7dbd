"""The core every margin head shares: cosine similarity between embeddings and class centres."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def normalized_cosine(embeddings: Tensor, weight: Tensor) -> Tensor:
    """(B, C) = normalize(x) @ normalize(W).T, clamped to [-1, 1].

    Half-precision results (autocast) are promoted to float32: margins take acos/sqrt of them.
    """
    cosine = F.linear(F.normalize(embeddings, dim=1), F.normalize(weight, dim=1))
    if cosine.dtype in (torch.float16, torch.bfloat16):
        cosine = cosine.float()
    return cosine.clamp(-1.0, 1.0)


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
