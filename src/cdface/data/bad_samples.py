"""Counting corrupt samples across DataLoader workers.

Each worker holds its own dataset copy, so the main process learns about corrupt images only through
the ``bad_index`` column of each batch. The trainer feeds that column to a ``BadSampleTracker``, which
reports per epoch and stops training with a clear error once too large a fraction is corrupt. This is the
one limit (``data.max_bad_fraction``), with one denominator: the samples loaded in the epoch so far. Its
state, the bad indices included, goes into checkpoints, so a resumed run reports what an uninterrupted
one reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cdface.errors import FormatError

__all__ = ["BadSampleTracker", "EpochBadReport"]


@dataclass(frozen=True)
class EpochBadReport:
    epoch: int
    seen: int
    bad: int
    bad_indices: tuple[int, ...]

    @property
    def fraction(self) -> float:
        return self.bad / self.seen if self.seen else 0.0

    def __str__(self) -> str:
        shown = ", ".join(map(str, self.bad_indices[:10])) + (" ..." if len(self.bad_indices) > 10 else "")
        return f"epoch {self.epoch}: {self.bad} corrupt of {self.seen} samples ({self.fraction:.3%}) [{shown}]"


@dataclass
class BadSampleTracker:
    """Counts ``bad_index >= 0`` entries; raises FormatError when bad/seen exceeds ``max_bad_fraction``.

    The running check waits for ``min_seen`` samples so one early bad batch does not stop a run;
    ``end_epoch`` always checks.
    """

    max_bad_fraction: float = 0.01
    source: str = "training data"
    min_seen: int = 1000
    epoch: int = 0
    seen: int = 0
    bad: int = 0
    total_seen: int = 0
    total_bad: int = 0
    _indices: set[int] = field(default_factory=set)

    def update(self, bad_index: torch.Tensor | np.ndarray | list[int]) -> int:
        """Add one batch's ``bad_index`` column; returns how many of its samples were substitutes."""
        column = bad_index.detach().cpu().numpy() if isinstance(bad_index, torch.Tensor) else np.asarray(bad_index)
        column = column.reshape(-1)
        hits = column[column >= 0]
        self.seen += column.size
        self.total_seen += column.size
        self.bad += hits.size
        self.total_bad += hits.size
        self._indices.update(int(i) for i in hits)
        if self.seen >= self.min_seen:
            self._check()
        return int(hits.size)

    def end_epoch(self) -> EpochBadReport:
        """Report the epoch, check the fraction, reset the epoch counters."""
        report = EpochBadReport(self.epoch, self.seen, self.bad, tuple(sorted(self._indices)))
        self._check()
        self.epoch += 1
        self.seen = self.bad = 0
        self._indices.clear()
        return report

    def _check(self) -> None:
        if self.seen and self.bad / self.seen > self.max_bad_fraction:
            first = sorted(self._indices)[:10]
            raise FormatError(
                self.source,
                f"epoch {self.epoch}",
                f"at most {self.max_bad_fraction:.2%} corrupt samples, found {self.bad} of {self.seen} "
                f"({self.bad / self.seen:.2%}; sample indices {first}); "
                "repair the data or raise max_bad_fraction",
            )

    def state_dict(self) -> dict[str, int | torch.Tensor]:
        return {
            "epoch": self.epoch,
            "seen": self.seen,
            "bad": self.bad,
            "total_seen": self.total_seen,
            "total_bad": self.total_bad,
            "indices": torch.tensor(sorted(self._indices), dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, int | torch.Tensor]) -> None:
        for key in ("epoch", "seen", "bad", "total_seen", "total_bad"):
            setattr(self, key, int(state[key]))
        indices = state.get("indices")  # absent in checkpoints written before it was saved
        self._indices = set() if indices is None else {int(i) for i in indices.tolist()}
