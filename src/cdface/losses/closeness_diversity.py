"""The paper's closeness-and-diversity (CD) loss on easy, hard and hard-negative-centre embeddings.

closeness: per class, the mean over pairs i < j of ||e_i - e_j||^2 between its L2-normalised easy
samples, averaged over classes. For unit vectors sum_{i<j} ||e_i - e_j||^2 = n^2 - ||sum_i e_i||^2,
so it is O(n D) per class. A class with one easy sample has no pair and contributes 0.

diversity: for each hard sample h, log(mean_p exp(s * relu(cos(h, p))^2)) over the negative centres p,
computed as logsumexp - log P; averaged over all hard samples. ``centres`` (P, D) is one pool shared by
all classes (the reference repository), (K, NP, D) gives each class its own. No centre -> 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def closeness(easy: Tensor) -> Tensor:
    """Mean squared distance between normalised same-class easy embeddings; ``easy`` is (K, NE, D)."""
    _check_3d("easy", easy)
    easy = _upcast(easy)
    k, n, _ = easy.shape
    if n < 2 or k == 0:
        return easy.sum() * 0.0
    unit = F.normalize(easy, dim=-1)
    sum_norm2 = unit.sum(dim=1).pow(2).sum(dim=-1)  # (K,)
    sq_norms = unit.pow(2).sum(dim=(1, 2))  # (K,), = n unless an embedding is all zeros
    pair_sums = n * sq_norms - sum_norm2
    return pair_sums.mean() / (n * (n - 1) / 2)


def diversity(hard: Tensor, centres: Tensor, s: float = 64.0, mask: Tensor | None = None) -> Tensor:
    """Mean over hard samples of log(mean_p exp(s * relu(cos)^2)); ``hard`` (K, NH, D), ``centres`` (P, D)
    or (K, NP, D). ``mask`` ((P,) or (K, NP) bool) keeps only some centres (a fixed-size pool, see
    ``cdface.miners.mine_hard_negatives``); a class with no centre contributes 0."""
    _check_3d("hard", hard)
    hard, centres = _upcast(hard), _upcast(centres)
    unit = F.normalize(hard, dim=-1)
    if centres.dim() == 2:
        cos = torch.einsum("knd,pd->knp", unit, F.normalize(centres, dim=-1))
        keep = None if mask is None else mask.reshape(1, 1, -1)
    elif centres.dim() == 3 and centres.shape[0] == hard.shape[0]:
        cos = torch.einsum("knd,kpd->knp", unit, F.normalize(centres, dim=-1))
        keep = None if mask is None else mask.unsqueeze(1)
    else:
        raise ValueError(f"centres must be (P, D) or (K={hard.shape[0]}, NP, D), got {tuple(centres.shape)}")
    num_centres = cos.shape[-1]
    if num_centres == 0 or unit.shape[0] * unit.shape[1] == 0:
        return (hard.sum() + centres.sum()) * 0.0
    energy = s * cos.clamp(0.0, 1.0).pow(2)
    if keep is None:
        return (torch.logsumexp(energy, dim=-1) - math.log(num_centres)).mean()
    # masked: log(mean over the kept centres); no host read of the mask (a training step stays sync-free)
    counts = keep.sum(dim=-1).expand(energy.shape[:-1])
    energy = energy.masked_fill(~keep, float("-inf"))
    per_sample = torch.logsumexp(energy, dim=-1) - counts.clamp_min(1).to(energy.dtype).log()
    return torch.where(counts > 0, per_sample, torch.zeros_like(per_sample)).mean()


def _upcast(x: Tensor) -> Tensor:
    """Half-precision embeddings (autocast) go to float32: n^2 - ||sum e||^2 cancels badly in fp16."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_3d(name: str, x: Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"{name} must be (K, N, D), got shape {tuple(x.shape)}")


class ClosenessDiversityLoss(nn.Module):
    """``wc * closeness(easy) + wd * diversity(hard, centres)`` (embeddings need not be normalised)."""

    def __init__(self, s: float = 64.0, wc: float = 0.5, wd: float = 1.0) -> None:
        super().__init__()
        self.s = s
        self.wc = wc
        self.wd = wd

    def components(
        self, easy: Tensor, hard: Tensor, centres: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(closeness, diversity), unweighted, for logging; ``mask`` selects centres (see ``diversity``)."""
        return closeness(easy), diversity(hard, centres, self.s, mask)

    def weighted(self, closeness_value: Tensor, diversity_value: Tensor) -> Tensor:
        """``wc * closeness + wd * diversity`` of the two terms ``components`` returned."""
        return self.wc * closeness_value + self.wd * diversity_value

    def forward(self, easy: Tensor, hard: Tensor, centres: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.weighted(*self.components(easy, hard, centres, mask))

    def extra_repr(self) -> str:
        return f"s={self.s}, wc={self.wc}, wd={self.wd}"
