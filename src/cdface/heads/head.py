"""MarginHead: the normalised-linear core plus one margin module, and the factory that builds them."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from cdface.errors import ConfigError

from .adaface import AdaFaceMargin
from .arcface import ArcFaceMargin
from .combined import CombinedMargin
from .cosface import CosFaceMargin
from .curricularface import CurricularFaceMargin
from .functional import gather_target, positive_mask
from .magface import MagFaceMargin
from .margin import Margin
from .normalized_linear import NormalizedLinear
from .output import HeadOutput

MARGINS: Mapping[str, type[Margin]] = MappingProxyType(
    {
        "arcface": ArcFaceMargin,
        "cosface": CosFaceMargin,
        "combined": CombinedMargin,
        "curricularface": CurricularFaceMargin,
        "adaface": AdaFaceMargin,
        "magface": MagFaceMargin,
    }
)


class MarginHead(nn.Module):
    """Classifier for margin-based training: ``weight`` (C, D) is the class centres."""

    def __init__(self, embedding_size: int, num_classes: int, margin: Margin, init_std: float = 0.01) -> None:
        super().__init__()
        self.core = NormalizedLinear(embedding_size, num_classes, init_std=init_std)
        self.margin = margin

    @property
    def weight(self) -> nn.Parameter:
        return self.core.weight

    @property
    def num_classes(self) -> int:
        return self.core.num_classes

    @property
    def embedding_size(self) -> int:
        return self.core.embedding_size

    def forward(self, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        norms = embeddings.float().norm(dim=1, keepdim=True)
        cosine = self.core(embeddings)
        logits = self.margin(cosine, labels, norms)
        with torch.no_grad():
            target = gather_target(cosine, labels)
            target = torch.where(positive_mask(labels), target, torch.full_like(target, float("nan")))
            correct = cosine.argmax(dim=1) == labels
        aux_loss = self.margin.aux_loss(norms)
        return HeadOutput(logits=logits, cosine=cosine, target_cosine=target, aux_loss=aux_loss, correct=correct)


def create_margin(name: str, **kwargs: Any) -> Margin:
    """The margin module called ``name`` ("arcface", "cosface", ...) with its keyword settings."""
    try:
        cls = MARGINS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown margin {name!r}; choose one of {sorted(MARGINS)}") from None
    allowed = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"head.params: unknown {unknown} for {name}; allowed: {', '.join(allowed)}")
    return cls(**kwargs)


def create_head(name: str, embedding_size: int, num_classes: int, **kwargs: Any) -> MarginHead:
    """A MarginHead with the margin called ``name``; ``kwargs`` go to the margin, ``init_std`` to the core."""
    init_std = kwargs.pop("init_std", 0.01)
    return MarginHead(embedding_size, num_classes, create_margin(name, **kwargs), init_std=init_std)
