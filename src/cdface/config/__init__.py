"""Typed training configs: dataclasses loaded from YAML, with `key=value` overrides.

The package, in the order a config is built: ``schema`` (the dataclasses, allowed values and ranges, checking
one value), ``sources`` (where each value came from, for errors), ``merging`` (``deep_merge``), ``shipped``
(the shipped configs by name), ``validation`` (checks across keys), ``loading`` (``load_config``: defaults, a
file and its `base:` chain, overrides). Every public name is importable from ``cdface.config``.
"""

from cdface.config.loading import config_from_dict, config_to_dict, dump_config, load_config, parse_overrides
from cdface.config.merging import deep_merge
from cdface.config.schema import (
    CDConfig,
    DataConfig,
    FinetuneConfig,
    HeadConfig,
    HealthConfig,
    ModelConfig,
    OptimConfig,
    ScoreConfig,
    TrainConfig,
    apply_values,
)
from cdface.config.shipped import resolve_config_path, shipped_config, shipped_config_dir, shipped_configs
from cdface.config.sources import Sources
from cdface.config.validation import check_world_size, validate

__all__ = [
    "CDConfig", "DataConfig", "FinetuneConfig", "HeadConfig", "HealthConfig", "ModelConfig", "OptimConfig",
    "ScoreConfig", "Sources",
    "TrainConfig", "apply_values", "check_world_size", "config_from_dict", "config_to_dict", "deep_merge",
    "dump_config", "load_config", "parse_overrides", "resolve_config_path", "shipped_config", "shipped_config_dir",
    "shipped_configs", "validate",
]
