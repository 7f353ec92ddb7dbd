"""cdface: train and evaluate deep face representations.

Subpackages are imported lazily so that `import cdface` stays cheap and a user who only scores
features never pays for model code.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("models", "heads", "losses", "miners", "data", "train", "eval", "inference", "parallel", "config")
_LAZY_ATTRS = {
    "create_model": ("cdface.models", "create_model"),
    "FaceEmbedder": ("cdface.inference", "FaceEmbedder"),
    "compare": ("cdface.inference", "compare"),
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"cdface.{name}")
    if name in _LAZY_ATTRS:
        module, attr = _LAZY_ATTRS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cdface' has no attribute {name!r}")


__all__ = ["__version__", "create_model", "FaceEmbedder", "compare", *_SUBMODULES]
