"""CosFace: additive cosine margin, s * (cos_y - m) on the target (Wang et al., CVPR 2018)."""

from __future__ import annotations

from torch import Tensor

from .functional import gather_target, scale_and_replace_target
from .margin import Margin


class CosFaceMargin(Margin):
    def __init__(self, s: float = 64.0, m: float = 0.4) -> None:
        super().__init__()
        self.s = s
        self.m = m

    def forward(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        target = gather_target(cosine, labels) - self.m
        return scale_and_replace_target(cosine, labels, target, self.s)

    def extra_repr(self) -> str:
        return f"s={self.s}, m={self.m}"
