"""The result of evaluating one model on one target, and file fingerprints for provenance."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TargetResult", "sha256_file"]


@dataclass
class TargetResult:
    """One target's outcome: the protocol's metric object, where its inputs came from, and plot curves.

    `metrics` is the JSON-ready dict of the scoring function's result; `curves` holds arrays for plots
    only (ROC, CMC, distractor-size curve) and is not written to results.json.
    """

    target: str
    kind: str  # "pairs" | "ijb" | "megaface"
    metrics: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
