"""A model's input contract (size, mean/std, colour order) and the `model.json` file that carries it.

Every face model expects one exact preprocessing; getting it wrong (BGR vs RGB, [0,1] vs [-1,1]) silently
costs accuracy. So the contract travels with the weights as data and is resolved in one place, with a fixed
precedence: explicit arguments > model.json > the module's own `input_cfg` > the project default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cdface.errors import ConfigError, FormatError
from cdface.files import atomic_write

__all__ = ["DEFAULT_INPUT_CFG", "resolve_input_cfg", "read_model_json", "write_model_json", "parse_triple"]

DEFAULT_INPUT_CFG: dict[str, Any] = {
    "input_size": (112, 112),
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "color": "RGB",
}
_COLORS = ("RGB", "BGR")


def parse_triple(text: str | Sequence[float] | None, what: str) -> tuple[float, float, float] | None:
    """'0.485,0.456,0.406' (or a single value, or a sequence) -> a 3-tuple of floats; None passes through."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")] if isinstance(text, str) else [float(v) for v in text]
    except ValueError:
        raise ConfigError(f"{what} needs 1 or 3 comma-separated numbers, got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ConfigError(f"{what} needs 1 or 3 comma-separated values, got {text!r}")
    return (values[0], values[1], values[2])


def resolve_input_cfg(
    *layers: Mapping[str, Any] | None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    bgr: bool | None = None,
    input_size: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Merge input configs, later layers winning, then explicit overrides; validate and normalise types."""
    cfg = dict(DEFAULT_INPUT_CFG)
    for layer in layers:
        if layer:
            cfg.update({k: layer[k] for k in DEFAULT_INPUT_CFG if layer.get(k) is not None})
    if mean is not None:
        cfg["mean"] = mean
    if std is not None:
        cfg["std"] = std
    if bgr is not None:
        cfg["color"] = "BGR" if bgr else "RGB"
    if input_size is not None:
        cfg["input_size"] = input_size
    size = tuple(int(v) for v in cfg["input_size"])
    mean_t = parse_triple(cfg["mean"], "mean")
    std_t = parse_triple(cfg["std"], "std")
    color = str(cfg["color"]).upper()
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"input_size must be (height, width), got {cfg['input_size']!r}")
    if std_t is None or min(std_t) <= 0:
        raise ValueError(f"std must be positive, got {cfg['std']!r}")
    if color not in _COLORS:
        raise ValueError(f"color must be one of {_COLORS}, got {cfg['color']!r}")
    return {"input_size": size, "mean": mean_t, "std": std_t, "color": color}


def read_model_json(path: str | Path) -> dict[str, Any]:
    """Read a `model.json` (arch, embedding_size, model_kwargs, input config); FormatError if malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(path, None, f"a readable JSON object ({exc})") from exc
    if not isinstance(data, dict):
        raise FormatError(path, None, "a JSON object with keys arch, embedding_size, input_size, mean, std, color")
    kwargs = data.get("model_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise FormatError(path, "key 'model_kwargs'", "a JSON object")
    return data


def write_model_json(path: str | Path, input_cfg: Mapping[str, Any], **fields: Any) -> Path:
    """Write a `model.json`: the given fields plus the input config, in plain JSON types."""
    cfg = resolve_input_cfg(input_cfg)
    data = dict(fields)
    data.update(input_size=list(cfg["input_size"]), mean=list(cfg["mean"]), std=list(cfg["std"]), color=cfg["color"])
    path = Path(path)
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
