"""Per-sample difficulty scores: an EMA of each training sample's target cosine.

The CD sampler reads them to split every class into easy (high score) and hard (low score) samples.
Initial value: the paper's repository starts its stage-1 (pretrain) scores from uniform random numbers
in [0, 1) (``np.random.rand``) and stage 2 resumes them; a dataset without saved scores starts at 0.
``initial="uniform"`` (default, seeded) reproduces the former, a float the latter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from cdface.miners.easy_hard import score_threshold

# How many steps old the scores the CD sampler draws from are: the copy it reads was started that many steps
# earlier, so on a GPU the host waits for it only when it runs more than a step ahead of the device.
LAG = 2


class ScoreBank:
    """N float32 scores on ``device``, updated as score = momentum * score + (1 - momentum) * cos.

    The update runs on the device and never reads a device value on the host, so a GPU training step does
    not wait for it. The CD sampler, which draws ahead on the host, reads ``lagged()``: the scores as they were
    ``lag`` published steps ago. ``publish()`` (after each step) starts a copy of the scores into a ring of
    ``lag + 1`` host buffers (pinned, non-blocking on a GPU); ``lagged()`` waits for the copy it returns (its
    event), which was started ``lag`` steps earlier and has normally landed. So what the sampler sees depends on
    the step count only, never on when a copy finishes: the same run draws the same samples on a CPU and a
    GPU, and a resume repeats them (the ring's older copies are part of ``state_dict``). ``numpy()`` is the
    current scores, for inspection.

    ``copy_async(dst, src)`` (tests) replaces the copy: it copies ``src`` into the host tensor ``dst`` and returns
    an object with ``synchronize()`` (or None when the copy is already done).
    """

    def __init__(
        self,
        num_samples: int,
        momentum: float = 0.9,
        initial: float | str = "uniform",
        seed: int = 0,
        device: torch.device | str = "cpu",
        lag: int = LAG,
        copy_async: Callable[[Tensor, Tensor], Any] | None = None,
    ) -> None:
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if lag < 1:
            raise ValueError(f"lag must be >= 1, got {lag}")
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
        self.lag = lag
        self._copy = copy_async or (_copy_to_pinned if self.device.type == "cuda" else _copy_now)
        pin = self.device.type == "cuda"
        # slot k % (lag + 1) holds the scores after the k-th publish since the start (or the load)
        self._ring = [scores.pin_memory() if pin else scores.clone() for _ in range(lag + 1)]
        self._pending: list[Any] = [None] * (lag + 1)  # the copy event of each slot, until waited for
        self._published = 0

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
        """After a step: start copying the scores to the host for the sampler (no wait on a GPU)."""
        self._published += 1
        # this slot held the copy lag + 1 steps old, which no draw reads any more (on a GPU a copy still in
        # flight into it lands first: copies run in stream order)
        slot = self._published % (self.lag + 1)
        self._pending[slot] = self._copy(self._ring[slot], self.scores)

    def lagged(self) -> np.ndarray:
        """The scores as they were ``lag`` publishes ago (the start's, or the checkpoint's history, before that),
        as float32 numpy: what the CD sampler draws from. Waits for that copy (normally long done)."""
        slot = (self._published - self.lag) % (self.lag + 1)
        self._wait(slot)
        return self._ring[slot].numpy()

    def _wait(self, slot: int) -> None:
        if self._pending[slot] is not None:
            self._pending[slot].synchronize()
            self._pending[slot] = None

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
        """The current scores as float32 numpy: a zero-copy live view on a CPU device, a copy (which waits for
        the device) on a GPU. For inspection; the sampler reads ``lagged()``."""
        return self.scores.numpy() if self.device.type == "cpu" else self.scores.cpu().numpy()

    def state_dict(self) -> dict[str, Tensor]:
        """``scores`` (N,), and ``lagged`` (lag, N): the copies ``lagged()`` returns over the next ``lag`` steps,
        oldest first, so a resumed run draws what the uninterrupted one would."""
        history = []
        for back in range(self.lag, 0, -1):
            slot = (self._published - back) % (self.lag + 1)
            self._wait(slot)
            history.append(self._ring[slot].clone())
        return {"scores": self.scores.detach().cpu().clone(), "lagged": torch.stack(history)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load ``state_dict()``'s; a state without ``lagged`` (an older checkpoint, or another lag) draws from
        the loaded scores until the ring has caught up."""
        scores = state.get("scores")
        if not isinstance(scores, Tensor) or scores.shape != self.scores.shape:
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(f"score bank state must hold 'scores' of shape ({len(self)},), got {shape}")
        scores = scores.to(torch.float32)
        history = state.get("lagged")
        if not isinstance(history, Tensor) or history.shape != (self.lag, len(self)):
            history = scores.expand(self.lag, -1)
        self.scores.copy_(scores)
        self._pending = [None] * (self.lag + 1)
        self._published = 0
        self._ring[0].copy_(scores)
        for back in range(1, self.lag + 1):  # slot -back holds the scores `back` steps before the saved ones
            self._ring[-back % (self.lag + 1)].copy_(history[self.lag - back])


def _copy_now(dst: Tensor, src: Tensor) -> None:
    """A CPU device: the copy is done when it returns."""
    dst.copy_(src)


def _copy_to_pinned(dst: Tensor, src: Tensor) -> torch.cuda.Event:
    """A GPU: a non-blocking copy into pinned memory, and the event that marks its end."""
    dst.copy_(src, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return event
