"""The one merge of config values: `base:` chains, `key=value` overrides, `config_from_dict` and `cdface
ablate`'s presets (`deep_merge`)."""

from __future__ import annotations

from typing import Any

from cdface.config.sources import Sources, set_source


def deep_merge(base: dict[str, Any], override: dict[str, Any], sources: Sources | None = None,
               origin: str = "", prefix: str = "") -> dict[str, Any]:
    """`override` over `base`, section by section and key by key (`head.params.m=0.4` keeps the other
    parameters). One exception: when `override` names another margin (`head.name`), `head.params` is
    replaced whole by the override's (empty: the new margin's defaults), since a head's parameters belong to
    that head. `sources` (if given) records that `origin` set each key. The one merge of configs: `base:`
    chains, `key=value` overrides and `cdface ablate`'s presets."""
    out = dict(base)
    new_head = prefix == "head." and "name" in override and override["name"] != base.get("name")
    if new_head:
        out["params"] = {}
        if sources is not None:
            set_source(sources, f"{prefix}params", origin)
    for key, value in override.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, sources, origin, f"{full}.")
        else:
            out[key] = value
            if sources is not None:
                set_source(sources, full, origin)
    return out
