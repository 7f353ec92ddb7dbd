"""The margin head a config names, replicated or sharded: the one place a training head is built.

``head.params`` are the margin's settings plus ``init_std``, the standard deviation of the class centres'
normal initialisation, which both heads take (the sharded one draws its rows of the centres as the replicated
one draws them all, so on one process both start from the same centres).
"""

from __future__ import annotations

import torch
from torch import nn

from cdface.config import TrainConfig
from cdface.heads import MarginHead, create_margin
from cdface.parallel import ShardedMarginHead

INIT_STD = 0.01  # insightface's normal(0, 0.01) for the class centres


def build_head(cfg: TrainConfig, num_classes: int, rank: int, local_batch: int, device: torch.device) -> nn.Module:
    """``MarginHead`` (C, D) or, with ``head.sharded``, this rank's ``ShardedMarginHead`` (Partial FC when
    ``head.sample_rate`` < 1, its sampling stream seeded by (seed, rank); every rank passes ``local_batch``
    rows), on ``device``. ConfigError for an unknown margin or parameter."""
    params = dict(cfg.head.params)
    init_std = float(params.pop("init_std", INIT_STD))
    margin = create_margin(cfg.head.name, **params)
    if cfg.head.sharded:  # class centres split over the ranks; see cdface.parallel
        head: nn.Module = ShardedMarginHead(
            cfg.model.embedding_size,
            num_classes,
            margin,
            sample_rate=cfg.head.sample_rate,
            init_std=init_std,
            generator=torch.Generator(device).manual_seed(cfg.seed * 1000 + rank),
            rows_per_rank=local_batch,
        )
    else:
        head = MarginHead(cfg.model.embedding_size, num_classes, margin, init_std=init_std)
    return head.to(device)


__all__ = ["INIT_STD", "build_head"]
