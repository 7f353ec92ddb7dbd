"""Per-GPU memory of a (sharded, Partial FC) margin head, from a formula checked against real tensors.

Per GPU, with C_local = ceil(C / world) centres (the largest shard), D the embedding size, B the global
batch and S the centres used per step (C_local, or with Partial FC max(ceil(r C_local), min(B, C_local)):
the sampled quota, or every positive when the batch has more classes than the quota):

* weights      C_local x D x 4 bytes   (fp32 master weights, also under mixed precision)
* gradient     C_local x D x 4 bytes   (dense: unsampled rows get zeros, as in insightface)
* optimizer    C_local x D x 4 x k     (k = 1 for SGD momentum, 2 for AdamW, 0 for plain SGD)
* logits       2 x B x S x bytes(dtype) (the forward logits and their gradient in backward)

Transient buffers of the same (B, S) size (cosines, softmax) come on top during the step; the sampled
weight copy with Partial FC is S x D x 4. With ``model`` the replicated backbone's weights, gradient and
optimizer state are added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cdface.errors import ConfigError

from .sharding import num_sampled

__all__ = ["HeadMemory", "head_memory", "backbone_parameters", "DTYPE_BYTES", "OPTIMIZER_COPIES"]

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
OPTIMIZER_COPIES = {"sgd": 1, "adamw": 2, "none": 0}


@dataclass(frozen=True)
class HeadMemory:
    """Bytes per GPU; ``total`` is their sum."""

    num_classes: int
    world: int
    sample_rate: float
    batch: int
    shard_classes: int
    sampled_classes: int
    weight: int
    gradient: int
    optimizer: int
    logits: int
    backbone: int = 0

    @property
    def total(self) -> int:
        return self.weight + self.gradient + self.optimizer + self.logits + self.backbone


def head_memory(
    num_classes: int,
    world: int,
    sample_rate: float,
    batch: int,
    embedding_size: int = 512,
    dtype: str = "fp32",
    optimizer: str = "sgd",
    backbone_params: int = 0,
) -> HeadMemory:
    """The per-GPU memory model above; ``batch`` is the global batch (all ranks together)."""
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")
    if optimizer not in OPTIMIZER_COPIES:
        raise ConfigError(f"optimizer must be one of {sorted(OPTIMIZER_COPIES)}, got {optimizer!r}")
    if min(num_classes, world, batch, embedding_size) < 1:
        raise ConfigError("classes, world, batch and embedding size must be positive")
    shard = math.ceil(num_classes / world)
    sampled = num_sampled(shard, sample_rate)
    if sampled < shard:
        sampled = max(sampled, min(batch, shard))
    rows = shard * embedding_size * 4
    return HeadMemory(
        num_classes=num_classes,
        world=world,
        sample_rate=sample_rate,
        batch=batch,
        shard_classes=shard,
        sampled_classes=sampled,
        weight=rows,
        gradient=rows,
        optimizer=rows * OPTIMIZER_COPIES[optimizer],
        logits=2 * batch * sampled * DTYPE_BYTES[dtype],
        backbone=backbone_params * 4 * (2 + OPTIMIZER_COPIES[optimizer]),
    )


def backbone_parameters(model: str, embedding_size: int = 512) -> int:
    """Parameter count of a registered backbone, built on the meta device (no memory, no init cost)."""
    import torch

    from cdface.models import create_model

    with torch.device("meta"):
        net = create_model(model, embedding_size=embedding_size)
    return sum(p.numel() for p in net.parameters())


def format_bytes(count: int) -> str:
    """Human-readable binary size (GiB/MiB/KiB)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} B"
