"""Training health: train-batch accuracy, mean target cosine, and the margin-loss collapse plateau.

A margin loss with a large scale ``s`` and few classes can stall where every embedding is orthogonal to
every class centre: all cosines are ~0, the target logit is the margin's value at cos = 0 (ArcFace:
``s * cos(pi/2 + m) = -s * sin m``) and the cross-entropy sits at

    CE_plateau = log(exp(t0) + (C - 1) * exp(o0)) - t0      (ArcFace: ~ log(C - 1) + s * sin m)

where ``t0`` / ``o0`` are the margin's target / non-target logits at cos = 0. The gradient that would move
the features off the plateau is scaled by the softmax of ``s * cos``, which is flat there, so with ``s = 64``
and a few hundred classes a run can stay on it for its whole length (docs/quickstart.md shows one).
``collapse_plateau`` evaluates that value for any margin module; ``TrainingHealth`` accumulates the
per-step signals *on the device* (no host synchronisation in the step) and reads them at logging steps.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from cdface.files import atomic_write

log = logging.getLogger("cdface.train")

COLLAPSE_REMEDIES = (
    "a smaller scale (head.params.s of 16-32 for hundreds to a few thousand classes; s=64 is the setting for "
    "~10^5 classes), a learning-rate warm-up (optim.warmup_epochs), a lower optim.lr, or a smaller margin first"
)


@torch.no_grad()
def collapse_plateau(margin: nn.Module, num_classes: int) -> float:
    """The cross-entropy when every cosine is 0 (see the module docstring); nats, for ``num_classes`` >= 2.

    ``margin`` is any cdface margin module (ArcFace, CosFace, CurricularFace, AdaFace, MagFace...); it is
    copied, so its running statistics (CurricularFace's t, AdaFace's norm EMA) are untouched. Margins that
    read feature norms get a norm of 1 (MagFace clamps it into its own range).
    """
    probe = copy.deepcopy(margin).cpu().eval()
    cosine = torch.zeros(1, 2)
    labels = torch.zeros(1, dtype=torch.long)
    logits = probe(cosine, labels, torch.ones(1, 1)).float()[0]
    target, other = float(logits[0]), float(logits[1])
    return math.log(math.exp(target - other) + (num_classes - 1)) + other - target


@dataclass
class HealthStats:
    """Means over a window of steps: train-batch accuracy in [0, 1], target cosine, CE (nats), and over its CD
    steps (``cd_steps`` of them) the weighted CD loss and its two unweighted terms."""

    steps: int
    accuracy: float
    target_cosine: float
    ce_loss: float
    cd_steps: int = 0
    cd_loss: float = 0.0
    closeness: float = 0.0
    diversity: float = 0.0

    def record(self) -> dict[str, float]:
        """The fields a metrics record carries (the CD ones only when the window had a CD step)."""
        out = {"train_accuracy": self.accuracy, "target_cosine": self.target_cosine}
        if self.cd_steps:
            out |= {"cd_closeness": self.closeness, "cd_diversity": self.diversity}
        return out


class TrainingHealth:
    """Sums of the step signals on the device; ``read()`` is the only host sync (logging steps only).

    ``plateau`` is ``collapse_plateau(...)``; the run is called collapsed when, after ``collapse_after_steps``
    steps, a window's mean CE is at least ``ce_fraction`` of the plateau while its mean target cosine is below
    ``max_target_cosine``. The warning is given once per run.
    """

    def __init__(
        self,
        plateau: float,
        device: torch.device,
        collapse_after_steps: int,
        ce_fraction: float = 0.9,
        max_target_cosine: float = 0.1,
    ) -> None:
        self.plateau = plateau
        self.collapse_after_steps = collapse_after_steps
        self.ce_fraction = ce_fraction
        self.max_target_cosine = max_target_cosine
        self.warned = False
        # [steps, rows, correct rows, sum of target cosines, sum of step CE, CD steps, sums of the CD loss,
        # closeness and diversity]: one for the log window, one for the epoch
        self._window = torch.zeros(9, dtype=torch.float64, device=device)
        self._epoch = torch.zeros(9, dtype=torch.float64, device=device)

    def update(
        self, ce: Tensor, correct: Tensor | None, target_cosine: Tensor, apply: Tensor | None = None
    ) -> None:
        """Add one step: its CE (scalar), per-row correctness (B,) bool and target cosines (B,); nothing when
        the device flag ``apply`` is False (a skipped step)."""
        valid = torch.isfinite(target_cosine)
        rows = valid.sum()
        hits = (correct & valid).sum() if correct is not None else torch.zeros_like(rows)
        step = torch.stack(
            [
                torch.ones((), dtype=torch.float64, device=rows.device),
                rows.double(),
                hits.double(),
                torch.where(valid, target_cosine.double(), 0.0).sum(),
                ce.detach().double().reshape(()),
            ]
        )
        self._add(slice(0, 5), step, apply)

    def update_cd(self, loss: Tensor, closeness: Tensor, diversity: Tensor, apply: Tensor | None = None) -> None:
        """Add one CD step: the weighted loss and the two unweighted terms (scalars); see ``update``."""
        one = torch.ones((), dtype=torch.float64, device=loss.device)
        step = torch.stack([one, *(t.detach().double().reshape(()) for t in (loss, closeness, diversity))])
        self._add(slice(5, 9), step, apply)

    def _add(self, part: slice, step: Tensor, apply: Tensor | None) -> None:
        """Add ``step`` to the window's and the epoch's sums at ``part`` (zeros when ``apply`` is False)."""
        if apply is not None:
            step = torch.where(apply, step, 0.0)
        self._window[part] += step
        self._epoch[part] += step

    @staticmethod
    def _stats(sums: Tensor) -> HealthStats | None:
        steps, rows, hits, cos, ce, cd_steps, cd, close, diverse = sums.tolist()
        if steps == 0 or rows == 0:
            return None
        n = max(cd_steps, 1.0)
        return HealthStats(
            int(steps), hits / rows, cos / rows, ce / steps, int(cd_steps), cd / n, close / n, diverse / n
        )

    def read_window(self) -> HealthStats | None:
        """The log window's means (then a new window starts)."""
        stats = self._stats(self._window)
        self._window.zero_()
        return stats

    def read_epoch(self) -> HealthStats | None:
        """The epoch's means (then a new epoch starts)."""
        stats = self._stats(self._epoch)
        self._epoch.zero_()
        return stats

    def collapsed(self, stats: HealthStats | None, step: int) -> bool:
        """Whether ``stats`` (a window ending at ``step``) looks like the collapse plateau."""
        return (
            stats is not None
            and step >= self.collapse_after_steps
            and stats.ce_loss >= self.ce_fraction * self.plateau
            and stats.target_cosine < self.max_target_cosine
        )

    def check(self, stats: HealthStats | None, step: int, setting: str) -> str | None:
        """The collapse warning (once per run), or None; ``setting`` names the head, e.g. "arcface s=64 m=0.5"."""
        if self.warned or not self.collapsed(stats, step):
            return None
        self.warned = True
        assert stats is not None
        return (
            f"step {step}: training looks stuck on the margin-loss collapse plateau: CE {stats.ce_loss:.2f} against "
            f"{self.plateau:.2f} when every cosine is 0 ({setting}), mean target cosine {stats.target_cosine:.3f}, "
            f"train-batch accuracy {100 * stats.accuracy:.1f}%. The scaled softmax is flat there, so the features "
            f"stay orthogonal to all centres. Usual remedies: {COLLAPSE_REMEDIES}."
        )


def health_line(epoch: int, stats: HealthStats, plateau: float, extra: dict[str, float]) -> str:
    """One line per epoch: ``health epoch 3: train acc 74.2%, target cos 0.612, CE 6.10 (plateau 13.4), ...``."""
    parts = [
        f"train acc {100 * stats.accuracy:.1f}%",
        f"target cos {stats.target_cosine:.3f}",
        f"CE {stats.ce_loss:.2f} (collapse plateau {plateau:.1f})",
    ]
    if stats.cd_steps:
        parts.append(f"CD closeness {stats.closeness:.3f} diversity {stats.diversity:.3f}")
    parts += [f"{name} {value:.4g}" for name, value in extra.items()]
    return f"health epoch {epoch}: " + ", ".join(parts)




_HEALTH_EPOCH = re.compile(r"^health epoch (\d+):")


def truncate_health(path: Path, last_epoch: int) -> None:
    """Keep the `health_line`s of epochs <= `last_epoch` in `path` (a resumed run writes the later ones again),
    atomically; other lines (not health lines, e.g. cut by a kill) go too."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line + "\n" for line in lines if (m := _HEALTH_EPOCH.match(line)) and int(m.group(1)) <= last_epoch]
    if len(kept) != len(lines):
        atomic_write(path, "".join(kept))


__all__ = ["COLLAPSE_REMEDIES", "HealthStats", "TrainingHealth", "collapse_plateau", "health_line", "truncate_health"]
