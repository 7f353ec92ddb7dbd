"""Combined margin: s * (cos(m1 * theta_y + m2) - m3) on the target (insightface's combined loss).

m1 = 1, m3 = 0 is ArcFace without the theta + m > pi fallback (as insightface's CombinedMarginLoss);
m1 = 1, m2 = 0 is CosFace. Unlike insightface's torch version, any mix of the three is allowed (the
original mxnet formula). ``interclass_filtering_threshold`` > 0 zeroes non-target cosines above it (they
are likely label noise: the same identity under two labels), as in insightface.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .functional import cos_add, gather_target, safe_acos, scale_and_replace_target
from .margin import Margin


class CombinedMargin(Margin):
    def __init__(
        self,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        interclass_filtering_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        self.s = s
        self.m1 = m1
        self.m2 = m2
        self.m3 = m3
        self.interclass_filtering_threshold = interclass_filtering_threshold

    def forward(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        if self.interclass_filtering_threshold > 0:
            cosine = self._filter(cosine, labels)
        target = gather_target(cosine, labels)
        if self.m1 != 1.0:
            target = torch.cos(self.m1 * safe_acos(target) + self.m2)
        elif self.m2 != 0.0:
            target = cos_add(target.clamp(-1.0, 1.0), self.m2)
        target = target - self.m3
        return scale_and_replace_target(cosine, labels, target, self.s)

    def _filter(self, cosine: Tensor, labels: Tensor) -> Tensor:
        columns = torch.arange(cosine.shape[1], device=cosine.device)
        is_target = columns.unsqueeze(0) == labels.unsqueeze(1)
        dirty = (cosine > self.interclass_filtering_threshold) & ~is_target
        return cosine.masked_fill(dirty, 0.0)

    def extra_repr(self) -> str:
        return (
            f"s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}, "
            f"interclass_filtering_threshold={self.interclass_filtering_threshold}"
        )
