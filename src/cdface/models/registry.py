"""A timm-style registry: one name -> one constructor, and `create_model` as the single door.

Constructors are registered at import time of their architecture module (a write-once table, never
changed afterwards). Every model leaving `create_model` carries `input_cfg` (its preprocessing as data),
`arch` (its canonical registry name) and `model_kwargs` (the keyword arguments that rebuild it), so a
checkpoint's `model.json` and the evaluator never have to guess normalisation or architecture.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from cdface.errors import ConfigError
from cdface.models.input_contract import DEFAULT_INPUT_CFG

__all__ = [
    "accepted_options", "create_model", "default_input_cfg", "list_models", "model_aliases", "register_model",
    "resolve_model_name",
]

ModelFn = TypeVar("ModelFn", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_ALIASES: dict[str, str] = {}


def default_input_cfg(input_size: tuple[int, int] = (112, 112)) -> dict[str, Any]:
    """The project's default preprocessing (`DEFAULT_INPUT_CFG`: RGB, (x/255 - 0.5) / 0.5, i.e. values in
    [-1, 1]) at ``input_size``."""
    return {**DEFAULT_INPUT_CFG, "input_size": (int(input_size[0]), int(input_size[1]))}


def register_model(
    fn: ModelFn | None = None, *, name: str | None = None, aliases: tuple[str, ...] = ()
) -> Any:
    """Register a constructor `fn(embedding_size=512, **kw) -> nn.Module` under its function name.

    Usable bare (`@register_model`) or with options (`@register_model(aliases=("r100",))`); aliases are
    other spellings in use elsewhere (insightface's `r100`, face.evoLVe's `IR_101`) that resolve to it.
    """

    def decorate(func: ModelFn) -> ModelFn:
        key = (name or func.__name__).lower()
        if key in _MODELS or key in _ALIASES:
            raise ValueError(f"model name {key!r} is already registered")
        _MODELS[key] = func
        for alias in aliases:
            alias_key = alias.lower()
            if alias_key in _MODELS or alias_key in _ALIASES:
                raise ValueError(f"model alias {alias_key!r} is already registered")
            _ALIASES[alias_key] = key
        return func

    return decorate(fn) if fn is not None else decorate


def list_models() -> list[str]:
    """Canonical names of every registered model, sorted (aliases not included)."""
    return sorted(_MODELS, key=_natural_key)


def model_aliases() -> dict[str, list[str]]:
    """{canonical name: its aliases, sorted} for every model that has aliases (e.g. iresnet50: [r50])."""
    out: dict[str, list[str]] = {}
    for alias, name in _ALIASES.items():
        out.setdefault(name, []).append(alias)
    return {name: sorted(aliases, key=_natural_key) for name, aliases in out.items()}


def resolve_model_name(name: str) -> str:
    """Map a name or alias (any case) to its canonical registry name; ConfigError if unknown."""
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return key


def accepted_options(name: str) -> list[str]:
    """The keyword options (besides embedding_size) that the constructor of model `name` accepts."""
    return [p for p in inspect.signature(_MODELS[resolve_model_name(name)]).parameters if p != "embedding_size"]


def create_model(name: str, embedding_size: int = 512, **kwargs: Any) -> nn.Module:
    """Build a registered backbone; an unknown name or option raises ConfigError listing the allowed ones."""
    key = resolve_model_name(name)
    builder = _MODELS[key]
    allowed = accepted_options(key)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"model {key!r} got unknown option(s) {unknown}; allowed: {allowed}")
    if int(embedding_size) <= 0:
        raise ConfigError(f"embedding_size must be a positive integer, got {embedding_size!r}")
    model = builder(embedding_size=int(embedding_size), **kwargs)
    if not hasattr(model, "input_cfg"):
        model.input_cfg = default_input_cfg()
    model.arch = key
    model.model_kwargs = dict(kwargs)
    return model


def _natural_key(name: str) -> tuple[Any, ...]:
    """Sort 'ir18' < 'ir100' < 'ir_se50' < 'iresnet18' (numbers compared as numbers, before letters)."""
    parts: list[Any] = []
    digits = ""
    for ch in name + "\0":
        if ch.isdigit():
            digits += ch
            continue
        if digits:
            parts.append((0, int(digits)))
            digits = ""
        if ch != "\0":
            parts.append((1, ch))
    return tuple(parts)
