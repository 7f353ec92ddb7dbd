"""Small numerics shared by every margin: target-column access and angle maths with finite gradients.

Margins only ever change the target column of each row, so they gather it, compute a new value and
write it back. Rows whose label is -1 (their class lives on another shard of a model-parallel head)
keep their original value. ``acos``/``sqrt(1 - c^2)`` have infinite slopes at |c| = 1; the helpers
here keep values exact to ~1e-6 there while keeping gradients finite.
"""

from __future__ import annotations

import torch
from torch import Tensor

_SIN_EPS = 1e-12  # floor on 1 - c^2: sqrt(1e-12) = 1e-6 is the largest value error, at |c| = 1 only


def positive_mask(labels: Tensor) -> Tensor:
    """(B,) bool: rows that carry a target column on this head (label != -1)."""
    return labels >= 0


def gather_target(cosine: Tensor, labels: Tensor) -> Tensor:
    """(B,) value of each row's target column; rows with label -1 read column 0 (callers mask them)."""
    index = labels.clamp_min(0).long().unsqueeze(1)
    return cosine.gather(1, index).squeeze(1)


def scale_and_replace_target(cosine: Tensor, labels: Tensor, target: Tensor, scale: float) -> Tensor:
    """``scale * cosine`` with each positive row's target column replaced by ``scale * target``.

    One (B, C) allocation: the scatter is done in place on the freshly scaled tensor.
    """
    positive = positive_mask(labels)
    index = labels.clamp_min(0).long().unsqueeze(1)
    keep = cosine.gather(1, index).squeeze(1)
    values = torch.where(positive, target.to(cosine.dtype), keep) * scale
    return (cosine * scale).scatter_(1, index, values.unsqueeze(1))


def safe_sin(cos: Tensor) -> Tensor:
    """sin(acos(c)) = sqrt(1 - c^2), with a finite gradient at |c| = 1 (zero there)."""
    return (1.0 - cos * cos).clamp_min(_SIN_EPS).sqrt()


def safe_acos(cos: Tensor) -> Tensor:
    """acos(c) for c clamped to [-1, 1], computed as atan2(sin, cos) so its gradient stays finite."""
    cos = cos.clamp(-1.0, 1.0)
    return torch.atan2(safe_sin(cos), cos)


def cos_add(cos: Tensor, margin: Tensor | float) -> Tensor:
    """cos(acos(c) + m) = c cos m - sin(acos c) sin m, without an acos."""
    margin = torch.as_tensor(margin, dtype=cos.dtype, device=cos.device)
    return cos * torch.cos(margin) - safe_sin(cos) * torch.sin(margin)
