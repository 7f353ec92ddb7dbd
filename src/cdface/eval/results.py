"""The result of evaluating one model on one target (what every `cdface.eval.targets` runner returns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TargetResult"]


@dataclass
class TargetResult:
    """One target's outcome: the protocol's metric object, where its inputs came from, and plot curves.

    `metrics` is the JSON-ready dict of the scoring function's result; `curves` holds arrays for plots
    only (ROC, CMC, distractor-size curve) and is not written to results.json.
    """

    target: str
    kind: str  # "pairs" | "ijb" | "megaface" | "rfw" | "identification"
    metrics: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)
