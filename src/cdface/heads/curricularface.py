"""CurricularFace: ArcFace on the target, and hard negatives re-weighted by a running t (CVPR 2020).

As the official code: a non-target cosine c_j with c_j > cos(theta_y + m) becomes c_j * (t + c_j), where
t is an EMA (momentum 0.01) of the batch-mean target cosine, updated before it is used. The target gets
ArcFace's value with the cos_y - sin(pi - m) * m fallback. Rows with label -1 are left alone and do not
enter t. t is only updated in training mode.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .functional import cos_add, gather_target, positive_mask, scale_and_replace_target
from .margin import Margin


class CurricularFaceMargin(Margin):
    t: Tensor

    def __init__(self, s: float = 64.0, m: float = 0.5, momentum: float = 0.01) -> None:
        super().__init__()
        self.s = s
        self.m = m
        self.momentum = momentum
        self.th = math.cos(math.pi - m)
        self.mm = math.sin(math.pi - m) * m
        self.register_buffer("t", torch.zeros(1))

    def forward(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        positive = positive_mask(labels)
        target = gather_target(cosine, labels).clamp(-1.0, 1.0)
        with_margin = cos_add(target, self.m)
        final_target = torch.where(target > self.th, with_margin, target - self.mm)
        if self.training:
            self._update_t(target.detach(), positive)
        t = self.t.to(cosine.dtype)
        hard = (cosine > with_margin.detach().unsqueeze(1)) & positive.unsqueeze(1)
        modulated = torch.where(hard, cosine * (t + cosine), cosine)
        return scale_and_replace_target(modulated, labels, final_target, self.s)

    @torch.no_grad()
    def _update_t(self, target: Tensor, positive: Tensor) -> None:
        count = positive.sum()
        mean = torch.where(positive, target, torch.zeros_like(target)).sum() / count.clamp_min(1)
        updated = self.momentum * mean.to(self.t.dtype) + (1.0 - self.momentum) * self.t
        self.t.copy_(torch.where(count > 0, updated, self.t))

    def extra_repr(self) -> str:
        return f"s={self.s}, m={self.m}, momentum={self.momentum}"
