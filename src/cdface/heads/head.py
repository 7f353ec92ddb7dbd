"""MarginHead: the normalised-linear core plus one margin module, and the factory that builds them."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cdface.errors import ConfigError
from cdface.miners.hard_negatives import HardNegatives, mine_hard_negatives

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
        losses = F.cross_entropy(logits, labels.long(), ignore_index=-1, reduction="none")
        valid = positive_mask(labels)
        loss = (losses * valid).sum() / valid.sum().clamp_min(1)  # the mean over labelled rows, no host read
        if aux_loss is not None:
            loss = loss + aux_loss
        return HeadOutput(
            loss=loss, target_cosine=target, correct=correct, logits=logits, cosine=cosine, aux_loss=aux_loss,
            losses=losses,
        )

    @torch.no_grad()
    def hard_negatives(
        self, queries: Tensor, classes: Tensor, num_negatives: int, per_class: bool = False, all_ranks: bool = False,
        counts: list[int] | None = None,
    ) -> HardNegatives:
        """The paper's hard-negative centres of this rank's selected ``classes`` (K_local,), queried by one
        embedding of each (``last_row_of_class``); under DDP every rank calls it (queries are gathered).
        See ``cdface.miners.mine_hard_negatives``; ``ShardedMarginHead.hard_negatives`` is the same call."""
        return mine_hard_negatives(
            queries, classes, self.weight.detach(), num_negatives, per_class=per_class, all_ranks=all_ranks,
            counts=counts,
        )


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
