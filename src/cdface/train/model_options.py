"""The `model.*` config keys that become constructor options of the registered architecture.

Every value the config holds reaches the model, zero and false included (the config and `model.json` then
describe the model that trained). An architecture without an option is fine while the config asks for
that option's neutral value (no dropout, no checkpointing); any other value is a ConfigError.
"""

from __future__ import annotations

from typing import Any

from cdface.config import TrainConfig
from cdface.errors import ConfigError
from cdface.models.registry import accepted_options, resolve_model_name

# config key under `model.` -> the value that means "off" (what an architecture without the option does)
_NEUTRAL: dict[str, Any] = {"dropout": 0.0, "gradient_checkpointing": False}


def model_options(cfg: TrainConfig) -> dict[str, Any]:
    """Keyword options for `create_model(cfg.model.arch, ...)`; ConfigError for one the architecture lacks."""
    arch = resolve_model_name(cfg.model.arch)
    accepted = accepted_options(arch)
    options: dict[str, Any] = {}
    for key, neutral in _NEUTRAL.items():
        value = getattr(cfg.model, key)
        if key in accepted:
            options[key] = value
        elif value != neutral:
            raise ConfigError(
                f"model.{key}: {arch} has no {key} option (its options: {', '.join(accepted) or 'none'}); "
                f"leave it at {neutral!r}"
            )
    return options


def check_local_batch(backbone: Any, local_batch: int, world_size: int, freeze_bn: bool = False) -> None:
    """ConfigError at start when each process would see one sample per step and the backbone has a BatchNorm
    layer that learns its statistics: in training mode BatchNorm needs at least 2 values per channel (torch
    raises "Expected more than 1 value per channel" at the first step)."""
    from torch import nn

    if local_batch > 1 or freeze_bn:
        return
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        return
    per = f"batch_size {local_batch * world_size} over {world_size} processes" if world_size > 1 else "batch_size 1"
    raise ConfigError(
        f"batch_size: {per} gives each process 1 sample per step, and the BatchNorm layers of "
        f"{getattr(backbone, 'arch', type(backbone).__name__)} need at least 2 in training; use a batch_size of at "
        f"least {2 * world_size} (or finetune.freeze_bn: true, which keeps their running statistics)"
    )
