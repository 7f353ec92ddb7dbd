"""Checks across config keys that a type alone cannot express, and the world-size check of the batch."""

from __future__ import annotations

from cdface.config.schema import TrainConfig
from cdface.config.sources import Sources, located
from cdface.errors import ConfigError


def validate(cfg: TrainConfig, sources: Sources | None = None) -> None:
    """Cross-field checks that a type alone cannot express; `sources` (see load_config) names the file."""
    if cfg.batch_size <= 0:
        raise located(sources, "batch_size", f"batch_size: must be positive, got {cfg.batch_size}")
    if not 0.0 < cfg.head.sample_rate <= 1.0:
        raise located(sources, "head.sample_rate", f"head.sample_rate: must be in (0, 1], got {cfg.head.sample_rate}")
    if cfg.head.sample_rate < 1.0 and not cfg.head.sharded:
        raise located(sources, "head.sample_rate",
                       f"head.sample_rate: {cfg.head.sample_rate} needs head.sharded: true (Partial FC samples the "
                       "centres of the sharded head; the replicated head always uses every centre)")
    if cfg.cd.interval <= 0:
        raise located(sources, "cd.interval", f"cd.interval: must be positive, got {cfg.cd.interval}")
    if cfg.cd.s is not None and cfg.cd.s <= 0:
        raise located(sources, "cd.s", f"cd.s: must be positive (or null: the head's scale), got {cfg.cd.s}")
    if cfg.num_threads < 0:
        raise located(sources, "num_threads", f"num_threads: must be >= 0 (0 = auto), got {cfg.num_threads}")
    if not 0.0 < cfg.cd.percentile < 1.0:
        raise located(sources, "cd.percentile", f"cd.percentile: must be in (0, 1), got {cfg.cd.percentile}")
    if cfg.data.max_image_pixels < 0:
        raise located(sources, "data.max_image_pixels",
                       f"data.max_image_pixels: must be >= 0 (0 = the default), got {cfg.data.max_image_pixels}")
    if len(cfg.data.random_resized_crop) not in (0, 2):
        raise located(sources, "data.random_resized_crop",
                       "data.random_resized_crop: expected [] or [min_scale, max_scale]")
    if cfg.model.fp16:
        raise located(sources, "model.fp16",
                       "model.fp16: true would run the backbone in float16 without a gradient scaler (small "
                       "gradients underflow); use precision: fp16, which autocasts the backbone and scales the loss")
    if cfg.resume and cfg.overwrite:
        raise located(sources, "overwrite",
                       f"overwrite: true starts the run afresh, resume: {cfg.resume} continues it; set one of them")


def check_world_size(batch_size: int, world_size: int) -> None:
    """The global batch is split evenly over the processes; ConfigError (the same on every rank) when it cannot."""
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        raise ConfigError(
            f"batch_size: the global batch of {batch_size} cannot be split over {world_size} processes; "
            f"use a multiple of {world_size} (e.g. {lower or world_size} or {lower + world_size})"
        )
