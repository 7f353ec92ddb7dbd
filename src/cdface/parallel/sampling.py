"""Partial FC: per step, a shard keeps every centre its batch needs plus a random subset of the others.

The kept index lists the positive classes of the global batch that live on this shard first (sorted,
unique), then distinct random negatives until ``num_sample`` rows are kept; labels are remapped to
positions in that index. If the positives alone exceed ``num_sample`` all of them are kept and no
negative is added (as insightface's Partial FC does).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sample_centres"]


def sample_centres(
    local_labels: Tensor, num_local: int, num_sample: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Pick the centre rows of this shard to use this step.

    local_labels: (N,) class id within this shard, or -1 for classes of other shards.
    Returns ``(index, remapped)``: ``index`` (S,) int64 rows of the shard (positives first, no
    duplicates) and ``remapped`` (N,) the position of each label in ``index`` (-1 kept).
    """
    device = local_labels.device
    owned = local_labels >= 0
    positives = torch.unique(local_labels[owned], sorted=True)
    num_negatives = num_sample - positives.numel()
    if num_negatives > 0:
        scores = torch.rand(num_local, generator=generator, device=device)
        scores[positives] = 2.0  # never drawn: every negative score is below 1
        negatives = torch.topk(scores, num_negatives, largest=False, sorted=False).indices
        index = torch.cat([positives, negatives])
    else:
        index = positives
    remapped = torch.full_like(local_labels, -1)
    remapped[owned] = torch.searchsorted(positives, local_labels[owned])
    return index, remapped
