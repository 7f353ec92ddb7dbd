"""Which rank owns which class centres: contiguous row blocks, the remainder spread over the first ranks.

The layout is insightface's (``num_local = C // W + (rank < C % W)``), so its per-rank files map onto
ours without reordering, and any run can be resharded to another world size by slicing the full matrix.
"""

from __future__ import annotations

import math

from torch import Tensor

from cdface.errors import ConfigError

__all__ = ["shard_range", "shard_sizes", "reshard", "num_sampled"]


def shard_range(num_classes: int, rank: int, world: int) -> tuple[int, int]:
    """[start, end) of the class ids held by ``rank`` among ``world`` ranks."""
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"rank {rank} is not in a world of {world}")
    if num_classes < world:
        raise ConfigError(f"{num_classes} classes cannot be sharded over {world} ranks (one class each at least)")
    base, extra = divmod(num_classes, world)
    start = base * rank + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_sizes(num_classes: int, world: int) -> list[int]:
    """Number of classes on each rank, in rank order."""
    return [end - start for start, end in (shard_range(num_classes, r, world) for r in range(world))]


def reshard(full: Tensor, rank: int, world: int) -> Tensor:
    """This rank's rows of a full (num_classes, ...) tensor, as an independent copy."""
    start, end = shard_range(full.shape[0], rank, world)
    return full[start:end].clone()


def num_sampled(num_local: int, sample_rate: float) -> int:
    """Centres kept per shard and step by Partial FC (before adding positives beyond it): ceil(r * C_local)."""
    if not 0.0 < sample_rate <= 1.0:
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if sample_rate == 1.0:
        return num_local
    return max(1, min(num_local, math.ceil(sample_rate * num_local)))
