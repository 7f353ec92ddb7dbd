"""AdaFace: a margin that adapts to image quality, approximated by the feature norm (CVPR 2022).

As the official code: cosines are clamped to [-1 + 1e-3, 1 - 1e-3]; the norms (clipped to
[0.001, 100], detached) are standardised with running batch mean/std (EMA with ``t_alpha``, initial 20
and 100, updated before use, unbiased std) into a scaler z = clip(h * (norm - mean) / (std + 1e-3), -1, 1).
The target becomes cos(clip(theta_y - m * z, 1e-3, pi - 1e-3)) - (m + m * z). Statistics are updated in
training mode only, and std only when the batch has at least two rows (torch's std of one value is NaN).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .functional import gather_target, safe_acos, scale_and_replace_target
from .margin import Margin


class AdaFaceMargin(Margin):
    needs_norms = True
    batch_mean: Tensor
    batch_std: Tensor

    def __init__(
        self, s: float = 64.0, m: float = 0.4, h: float = 0.333, t_alpha: float = 0.01, eps: float = 1e-3
    ) -> None:
        super().__init__()
        self.s = s
        self.m = m
        self.h = h
        self.t_alpha = t_alpha
        self.eps = eps
        self.register_buffer("batch_mean", torch.full((1,), 20.0))
        self.register_buffer("batch_std", torch.full((1,), 100.0))

    def forward(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        safe_norms = self._require_norms(norms, cosine.shape[0]).detach().clamp(0.001, 100.0)
        if self.training:
            self._update_stats(safe_norms)
        scaler = (safe_norms - self.batch_mean) / (self.batch_std + self.eps)
        scaler = (scaler * self.h).clamp(-1.0, 1.0).to(cosine.dtype)
        cosine = cosine.clamp(-1.0 + self.eps, 1.0 - self.eps)
        theta = safe_acos(gather_target(cosine, labels))
        theta = (theta - self.m * scaler).clamp(self.eps, math.pi - self.eps)
        target = torch.cos(theta) - (self.m + self.m * scaler)
        return scale_and_replace_target(cosine, labels, target, self.s)

    @torch.no_grad()
    def _update_stats(self, safe_norms: Tensor) -> None:
        alpha = self.t_alpha
        self.batch_mean.mul_(1.0 - alpha).add_(alpha * safe_norms.mean().to(self.batch_mean.dtype))
        if safe_norms.numel() > 1:
            self.batch_std.mul_(1.0 - alpha).add_(alpha * safe_norms.std().to(self.batch_std.dtype))

    def extra_repr(self) -> str:
        return f"s={self.s}, m={self.m}, h={self.h}, t_alpha={self.t_alpha}"
