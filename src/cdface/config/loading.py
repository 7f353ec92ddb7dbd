"""Loading a config: defaults, then a YAML file and its `base:` chain, then `key=value` overrides; and the
config back as a mapping or YAML text.

A config file may name a `base:` file (relative to itself, or a shipped config by name) whose values it
overrides, so the paper's configs stay small. Unknown keys and wrong types are errors that name the key, what
is allowed and the file (or `override`) the value came from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from cdface.config.merging import deep_merge
from cdface.config.schema import TrainConfig, apply_values
from cdface.config.shipped import resolve_config_path, shipped_config, shipped_configs
from cdface.config.sources import Sources
from cdface.config.validation import validate
from cdface.errors import ConfigError


def _read_layers(
    path: Path, seen: tuple[Path, ...] = (), referrer: Path | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The file and its `base:` chain as (file, mapping) layers, the deepest base first, for `load_config` to
    merge one by one over the defaults (so a margin change is judged against the values in force).

    Errors name `path` as given (a `base:` file as the referring file's folder joined with the base path).
    """
    named_by = f" (the base: of {referrer})" if referrer is not None else ""
    try:
        resolved = path.resolve()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        shipped = ", ".join(shipped_configs())
        hint = f"; shipped configs, by name: {shipped}" if shipped and isinstance(exc, FileNotFoundError) else ""
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc}){named_by}{hint}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc}){named_by}") from exc
    except ValueError as exc:  # e.g. an embedded NUL byte in the path
        raise ConfigError(f"{path}: cannot read config ({exc}){named_by}") from exc
    if resolved in seen:
        raise ConfigError(f"{path}: `base:` chain loops back to itself")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{path}: not a config: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values")
    base = data.pop("base", None)
    if base is None:
        return [(str(path), data)]
    if not isinstance(base, str) or not base or "\0" in base:
        raise ConfigError(f"{path}: base: expected the path of another config file, got {base!r}")
    # relative to the file; a bare name that is no file there may name a shipped config (base: ms1mv2_r100_arcface)
    beside = path.parent / base
    base_path = beside if beside.exists() else shipped_config(base) or beside
    return [*_read_layers(base_path, (*seen, resolved), referrer=path), (str(path), data)]


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b=c` strings into a nested dict; values are parsed as YAML scalars/lists (`lr=0.01`, `x=[1,2]`)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=0.01)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value: {exc}") from exc
        except RecursionError:
            raise ConfigError(f"override {item!r}: cannot parse value: nested too deeply") from None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file (and its `base:` chain), then `key=value` overrides. ``path`` may name a
    shipped config instead (``synthetic_arcface``; see `resolve_config_path`).

    Errors about a key name the file (or the override) its value came from.
    """
    cfg = TrainConfig()
    sources: Sources = {}
    # one merge for everything: defaults <- the file (and its base: chain) <- each override, in order
    values = config_to_dict(cfg)
    if path is not None:
        # layer by layer from the defaults: a child's `head: {name: arcface}` over a base that set arcface's
        # params without naming it is no margin change (merged base-first, it replaced them with the defaults)
        for origin, layer in _read_layers(resolve_config_path(path)):
            values = deep_merge(values, layer, sources, origin)
    # a margin named on the command line comes first: the head.params given with it (before or after) are its own
    ordered = sorted(overrides or [], key=lambda item: item.split("=", 1)[0].strip() not in ("head", "head.name"))
    for item in ordered:
        values = deep_merge(values, parse_overrides([item]), sources, f"override {item!r}")
    apply_values(cfg, values, sources=sources)
    validate(cfg, sources)
    return cfg


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A config from nested values over the defaults, merged as ``load_config`` merges a file."""
    cfg = TrainConfig()
    apply_values(cfg, deep_merge(config_to_dict(cfg), values))
    validate(cfg)
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
