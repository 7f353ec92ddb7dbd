"""MagFace: an angular margin that grows with the feature norm, plus a norm regulariser (CVPR 2021).

As the official code: a = clamp(||x||, l_a, u_a) (with gradient), m(a) = linear from l_margin at l_a to
u_margin at u_a, target = cos(theta_y + m(a)); with ``easy_margin`` (the official default) only where
cos_y > 0, otherwise with ArcFace's cos_y - sin(pi - m) * m fallback past pi. The regulariser
g(a) = a / u_a^2 + 1 / a, averaged over the batch and weighted by ``lambda_g``, is ``aux_loss``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .functional import cos_add, gather_target, scale_and_replace_target
from .margin import Margin


class MagFaceMargin(Margin):
    needs_norms = True

    def __init__(
        self,
        s: float = 64.0,
        l_a: float = 10.0,
        u_a: float = 110.0,
        l_margin: float = 0.45,
        u_margin: float = 0.8,
        lambda_g: float = 35.0,
        easy_margin: bool = True,
    ) -> None:
        super().__init__()
        self.s = s
        self.l_a = l_a
        self.u_a = u_a
        self.l_margin = l_margin
        self.u_margin = u_margin
        self.lambda_g = lambda_g
        self.easy_margin = easy_margin

    def adaptive_margin(self, clamped_norms: Tensor) -> Tensor:
        slope = (self.u_margin - self.l_margin) / (self.u_a - self.l_a)
        return slope * (clamped_norms - self.l_a) + self.l_margin

    def forward(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        a = self._require_norms(norms, cosine.shape[0]).clamp(self.l_a, self.u_a)
        margin = self.adaptive_margin(a).to(cosine.dtype)
        target = gather_target(cosine, labels).clamp(-1.0, 1.0)
        with_margin = cos_add(target, margin)
        if self.easy_margin:
            target = torch.where(target > 0, with_margin, target)
        else:
            threshold = torch.cos(math.pi - margin)
            fallback = target - torch.sin(math.pi - margin) * margin
            target = torch.where(target > threshold, with_margin, fallback)
        return scale_and_replace_target(cosine, labels, target, self.s)

    def aux_loss(self, norms: Tensor | None) -> Tensor:
        if norms is None:
            raise ValueError("MagFaceMargin needs the embedding norms (B, 1)")
        a = norms.reshape(-1).clamp(self.l_a, self.u_a)
        return self.lambda_g * (a / self.u_a**2 + 1.0 / a).mean()

    def extra_repr(self) -> str:
        return (
            f"s={self.s}, l_a={self.l_a}, u_a={self.u_a}, l_margin={self.l_margin}, "
            f"u_margin={self.u_margin}, lambda_g={self.lambda_g}, easy_margin={self.easy_margin}"
        )
