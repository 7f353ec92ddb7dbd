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
