"""Where each config value came from (a file's path or ``override 'k=v'``), so that an error names it."""

from __future__ import annotations

from cdface.errors import ConfigError

# Where each value came from, for error messages: dotted key -> a config file's path or "override 'k=v'".
# A key without an entry takes its closest section's (`optim.lr` -> `optim`); defaults have none.
Sources = dict[str, str]


def origin_of(sources: Sources | None, key: str) -> str | None:
    if not sources:
        return None
    while True:
        if key in sources:
            return sources[key]
        if "." not in key:
            return None
        key = key.rsplit(".", 1)[0]


def located(sources: Sources | None, key: str, message: str) -> ConfigError:
    """A ConfigError for `key`, prefixed with the file (or override) the key's value came from."""
    origin = origin_of(sources, key)
    return ConfigError(f"{origin}: {message}" if origin else message)


def set_source(sources: Sources, key: str, origin: str) -> None:
    """`key` (and everything under it) now comes from `origin`."""
    for stale in [k for k in sources if k.startswith(f"{key}.")]:
        del sources[stale]
    sources[key] = origin
