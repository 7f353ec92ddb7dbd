"""ArcFace: additive angular margin, s * cos(theta_y + m) on the target (Deng et al., CVPR 2019).

Follows insightface's arcface_torch ``ArcFace``: where theta_y + m would pass pi (cos_y <= cos(pi - m))
the target becomes cos_y - sin(pi - m) * m, keeping the logit monotonic in theta; ``easy_margin`` instead
applies the margin only where cos_y > 0. Gradients are the true ones (no straight-through arccos).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .functional import cos_add, gather_target, scale_and_replace_target
from .margin import Margin


class ArcFaceMargin(Margin):
    def __init__(self, s: float = 64.0, m: float = 0.5, easy_margin: bool = False) -> None:
        super().__init__()
        self.s = s
        self.m = m
        self.easy_margin = easy_margin
        self.th = math.cos(math.pi - m)
        self.mm = math.sin(math.pi - m) * m

    def forward(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        target = gather_target(cosine, labels).clamp(-1.0, 1.0)
        with_margin = cos_add(target, self.m)
        if self.easy_margin:
            target = torch.where(target > 0, with_margin, target)
        else:
            target = torch.where(target > self.th, with_margin, target - self.mm)
        return scale_and_replace_target(cosine, labels, target, self.s)

    def extra_repr(self) -> str:
        return f"s={self.s}, m={self.m}, easy_margin={self.easy_margin}"
