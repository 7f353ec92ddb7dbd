"""Per-sample difficulty scores: an EMA of each training sample's target cosine.

The CD sampler reads them to split every class into easy (high score) and hard (low score) samples.
Initial value: the paper's repository starts its stage-1 (pretrain) scores from uniform random numbers
in [0, 1) (``np.random.rand``) and stage 2 resumes them; a dataset without saved scores starts at 0.
``initial="uniform"`` (default, seeded) reproduces the former, a float the latter.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from cdface.miners.easy_hard import score_threshold


class ScoreBank:
    """A float32 CPU tensor of N scores, updated as score = momentum * score + (1 - momentum) * cos."""

    def __init__(
        self, num_samples: int, momentum: float = 0.9, initial: float | str = "uniform", seed: int = 0
    ) -> None:
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        if initial == "uniform":
            generator = torch.Generator().manual_seed(seed)
            self.scores = torch.rand(num_samples, generator=generator, dtype=torch.float32)
        elif isinstance(initial, (int, float)):
            self.scores = torch.full((num_samples,), float(initial), dtype=torch.float32)
        else:
            raise ValueError(f"initial must be 'uniform' or a number, got {initial!r}")

    def __len__(self) -> int:
        return self.scores.numel()

    @torch.no_grad()
    def update(self, indices: Tensor | np.ndarray, target_cosine: Tensor | np.ndarray) -> None:
        """EMA step for each sample in ``indices`` with its new target cosine.

        A sample present several times in one call gets one EMA step with the mean of its cosines (the
        reference's numpy assignment kept an arbitrary one). Non-finite cosines (label -1 rows) are skipped.
        """
        idx = torch.as_tensor(indices).reshape(-1).to("cpu", torch.int64)
        cos = torch.as_tensor(target_cosine).reshape(-1).to("cpu", torch.float32)
        if idx.numel() != cos.numel():
            raise ValueError(f"{idx.numel()} indices but {cos.numel()} cosines")
        keep = torch.isfinite(cos)
        idx, cos = idx[keep], cos[keep]
        if idx.numel() == 0:
            return
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= len(self):
            raise IndexError(f"score indices must be in [0, {len(self)}), got [{low}, {high}]")
        unique, inverse = torch.unique(idx, return_inverse=True)
        sums = torch.zeros(unique.numel(), dtype=torch.float32).index_add_(0, inverse, cos)
        counts = torch.zeros(unique.numel(), dtype=torch.float32).index_add_(0, inverse, torch.ones_like(cos))
        old = self.scores[unique]
        self.scores[unique] = self.momentum * old + (1.0 - self.momentum) * (sums / counts)

    @torch.no_grad()
    def sync(self, group: dist.ProcessGroup | None = None) -> None:
        """Average the scores over the ranks of ``group`` (no-op without an initialised process group)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        world = dist.get_world_size(group)
        if world == 1:
            return
        buffer = self.scores
        if dist.get_backend(group) == "nccl":
            buffer = buffer.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
        buffer.div_(world)
        if buffer is not self.scores:
            self.scores.copy_(buffer.cpu())

    def threshold(
        self, p: float = 0.2, max_samples: int = 100_000, rng: np.random.Generator | None = None
    ) -> float:
        """The p-quantile of the scores (see ``cdface.miners.score_threshold``)."""
        return score_threshold(self.numpy(), p=p, max_samples=max_samples, rng=rng)

    def numpy(self) -> np.ndarray:
        """A zero-copy float32 view of the scores (reflects later updates)."""
        return self.scores.numpy()

    def state_dict(self) -> dict[str, Tensor]:
        return {"scores": self.scores.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        scores = state.get("scores")
        if not isinstance(scores, Tensor) or scores.shape != self.scores.shape:
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(f"score bank state must hold 'scores' of shape ({len(self)},), got {shape}")
        self.scores.copy_(scores.to(torch.float32))
