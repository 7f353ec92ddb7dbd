"""Learning-rate schedules as a multiplier of the base lr per optimizer step (warmup, then step/cosine/poly)."""

from __future__ import annotations

import math
from collections.abc import Callable

from cdface.config import OptimConfig


def lr_multiplier(cfg: OptimConfig, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """Return f(step) -> factor. Milestones and warmup are in epochs, as the paper states them."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    milestones = sorted(int(round(m * steps_per_epoch)) for m in cfg.milestones)

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "constant":
            return 1.0
        if cfg.scheduler == "step":
            return cfg.gamma ** sum(step >= m for m in milestones)
        span = max(1, total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        if cfg.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return (1.0 - progress) ** cfg.poly_power  # poly

    return factor


def group_multipliers(
    groups: list[dict], factor: Callable[[int], float], head_warmup_steps: int = 0
) -> list[Callable[[int], float]]:
    """One multiplier per optimizer group (`torch.optim.lr_scheduler.LambdaLR` takes a list): `factor` for
    each, except that the backbone's groups (``"part": 0``, see `build_optimizer`) stay at 0 for the first
    `head_warmup_steps` steps, while a new head learns alone."""

    def backbone(step: int) -> float:
        return 0.0 if step < head_warmup_steps else factor(step)

    return [backbone if head_warmup_steps > 0 and group.get("part") == 0 else factor for group in groups]


def schedule_notes(cfg: OptimConfig, steps_per_epoch: int, total_steps: int) -> list[str]:
    """Warnings about a schedule that does not fit the run: step milestones (or a warm-up) at or past its end."""
    notes = []
    end_epoch = total_steps / steps_per_epoch
    if cfg.scheduler == "step":
        late = [m for m in cfg.milestones if int(round(m * steps_per_epoch)) >= total_steps]
        if late:
            notes.append(
                f"optim.milestones {', '.join(f'{m:g}' for m in late)} (epochs) are at or past the end of the run "
                f"(epoch {end_epoch:.4g}, step {total_steps}): the lr never drops there; move them inside the run "
                "or lengthen it"
            )
    if cfg.warmup_epochs > 0 and int(round(cfg.warmup_epochs * steps_per_epoch)) >= total_steps:
        notes.append(
            f"optim.warmup_epochs {cfg.warmup_epochs:g} lasts the whole run (epoch {end_epoch:.4g}): the lr never "
            "reaches optim.lr"
        )
    return notes
