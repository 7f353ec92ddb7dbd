"""Where derived data (label tables of large training sets) is cached: never beside the data.

Dataset folders are often read-only or shared, so caches live in a cache directory: the configured one
(``data.cache_dir``), else ``$XDG_CACHE_HOME/cdface``, else ``~/.cache/cdface``. A cache file's name is
keyed by the absolute paths, sizes and modification times of the files it was derived from, so a changed
or moved dataset never reads a stale cache.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["cache_file", "user_cache_dir"]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cdface`` if the variable is set (and absolute), else ``~/.cache/cdface``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "cdface"


def cache_file(
    sources: Sequence[str | os.PathLike], kind: str, suffix: str, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The cache path for data derived from ``sources`` (existing files): ``<dir>/<first name>.<kind>.<key><suffix>``.

    The key is a sha256 of each source's absolute path, size and mtime (ns). Nothing is created here.
    """
    digest = hashlib.sha256(kind.encode())
    for source in sources:
        path = Path(source).absolute()
        st = path.stat()
        digest.update(f"\0{path}\0{st.st_size}\0{st.st_mtime_ns}".encode("utf-8", "surrogateescape"))
    root = Path(cache_dir) if cache_dir else user_cache_dir()
    return root / f"{Path(sources[0]).name}.{kind}.{digest.hexdigest()[:20]}{suffix}"
