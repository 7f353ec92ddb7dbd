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
    """N float32 scores on ``device``, updated as score = momentum * score + (1 - momentum) * cos.

    The update runs on the device and never reads a device value on the host, so a GPU training step does
    not wait for it. The CD sampler, which draws ahead on the host, reads ``numpy()``: the scores themselves
    on a CPU device; on a GPU a pinned host copy that ``publish()`` refreshes asynchronously after each step
    (double-buffered: the sampler sees the newest completed copy, at most a step or two old, as it already
    draws a few batches ahead of the trained step).
    """

    def __init__(
        self,
        num_samples: int,
        momentum: float = 0.9,
        initial: float | str = "uniform",
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        if initial == "uniform":
            generator = torch.Generator().manual_seed(seed)
            scores = torch.rand(num_samples, generator=generator, dtype=torch.float32)
        elif isinstance(initial, (int, float)):
            scores = torch.full((num_samples,), float(initial), dtype=torch.float32)
        else:
            raise ValueError(f"initial must be 'uniform' or a number, got {initial!r}")
        self.device = torch.device(device)
        self.scores = scores.to(self.device)
        # scratch for duplicate-aware updates: zero between updates (only the touched entries are reset)
        self._sums = torch.zeros_like(self.scores)
        self._counts = torch.zeros_like(self.scores)
        self._host: list[Tensor] = []
        self._pending: tuple[Tensor, torch.cuda.Event] | None = None
        if self.device.type == "cuda":
            self._host = [scores.pin_memory(), scores.clone().pin_memory()]  # [newest complete, in flight]

    def __len__(self) -> int:
        return self.scores.numel()

    @torch.no_grad()
    def update(
        self, indices: Tensor | np.ndarray, target_cosine: Tensor | np.ndarray, apply: Tensor | None = None
    ) -> None:
        """EMA step for each sample in ``indices`` with its new target cosine.

        A sample present several times in one call gets one EMA step with the mean of its cosines (the
        reference's numpy assignment kept an arbitrary one). Non-finite cosines (label -1 rows) are skipped,
        and every row when the device flag ``apply`` (a bool scalar) is False (a skipped training step).
        Indices outside [0, N) fail with a device-side assertion.
        """
        idx = torch.as_tensor(indices).reshape(-1).to(self.device, torch.int64, non_blocking=True)
        cos = torch.as_tensor(target_cosine).reshape(-1).to(self.device, torch.float32, non_blocking=True)
        if idx.numel() != cos.numel():
            raise ValueError(f"{idx.numel()} indices but {cos.numel()} cosines")
        if idx.numel() == 0:
            return
        torch._assert_async(((idx >= 0) & (idx < len(self))).all(), f"score indices must be in [0, {len(self)})")
        keep = torch.isfinite(cos)
        if apply is not None:
            keep = keep & apply.to(self.device)
        weight = keep.to(torch.float32)
        self._sums.index_add_(0, idx, torch.where(keep, cos, 0.0))
        self._counts.index_add_(0, idx, weight)
        sums, counts = self._sums[idx], self._counts[idx]
        old = self.scores[idx]
        new = self.momentum * old + (1.0 - self.momentum) * (sums / counts.clamp_min(1.0))
        # duplicates write the same value; rows with nothing kept write their old score back
        self.scores.index_put_((idx,), torch.where(counts > 0, new, old))
        self._sums.index_fill_(0, idx, 0.0)
        self._counts.index_fill_(0, idx, 0.0)

    def publish(self) -> None:
        """After a step on a GPU: start copying the scores to the host for the sampler (no wait)."""
        if not self._host:
            return
        self._swap_if_done()
        if self._pending is None:
            self._host[1].copy_(self.scores, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (self._host[1], event)

    def _swap_if_done(self) -> None:
        if self._pending is not None and self._pending[1].query():
            self._host.reverse()
            self._pending = None

    @torch.no_grad()
    def sync(self, group: dist.ProcessGroup | None = None) -> None:
        """Average the scores over the ranks of ``group`` (no-op without an initialised process group)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        world = dist.get_world_size(group)
        if world == 1:
            return
        buffer = self.scores
        if dist.get_backend(group) == "nccl" and buffer.device.type != "cuda":
            buffer = buffer.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
        buffer.div_(world)
        if buffer is not self.scores:
            self.scores.copy_(buffer.to(self.scores.device))

    def threshold(
        self, p: float = 0.2, max_samples: int = 100_000, rng: np.random.Generator | None = None
    ) -> float:
        """The p-quantile of the scores (see ``cdface.miners.score_threshold``)."""
        return score_threshold(self.numpy(), p=p, max_samples=max_samples, rng=rng)

    def numpy(self) -> np.ndarray:
        """The scores as float32 numpy for the host: a zero-copy live view on a CPU device; on a GPU the
        newest complete copy that ``publish`` made (see the class docstring)."""
        if not self._host:
            return self.scores.numpy()
        self._swap_if_done()
        return self._host[0].numpy()

    def state_dict(self) -> dict[str, Tensor]:
        return {"scores": self.scores.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        scores = state.get("scores")
        if not isinstance(scores, Tensor) or scores.shape != self.scores.shape:
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(f"score bank state must hold 'scores' of shape ({len(self)},), got {shape}")
        self.scores.copy_(scores.to(torch.float32))
        for host in self._host:
            host.copy_(scores.to(torch.float32))
