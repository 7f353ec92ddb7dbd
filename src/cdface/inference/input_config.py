"""The `model.json` file that carries a model's input contract beside its weights.

The contract itself (DEFAULT_INPUT_CFG, resolve_input_cfg, parse_triple, InputContract) lives in
`cdface.models.input_contract`, where training and inference both take it from; it is re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cdface.errors import ConfigError, FormatError
from cdface.files import atomic_write
from cdface.models.input_contract import DEFAULT_INPUT_CFG, InputContract, parse_triple, resolve_input_cfg

__all__ = ["DEFAULT_INPUT_CFG", "InputContract", "resolve_input_cfg", "read_model_json", "write_model_json",
           "parse_triple"]


# other tools' names for the card's input keys (timm's pretrained_cfg, insightface, OpenCV, TF model cards)
_OTHER_SPELLINGS = {
    "input_mean": "mean", "mean_values": "mean", "pixel_mean": "mean", "norm_mean": "mean",
    "input_std": "std", "std_values": "std", "pixel_std": "std", "norm_std": "std",
    "colour": "color", "color_space": "color", "colorspace": "color", "channel_order": "color", "bgr": "color",
    "rgb": "color", "image_size": "input_size", "img_size": "input_size", "input_shape": "input_size",
}


def read_model_json(path: str | Path) -> dict[str, Any]:
    """Read a `model.json` (arch, embedding_size, model_kwargs, input config); FormatError if malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(path, None, f"a readable JSON object ({exc})") from exc
    if not isinstance(data, dict):
        raise FormatError(path, None, "a JSON object with keys arch, embedding_size, input_size, mean, std, color")
    for key in data:  # a hand-written card in another tool's words would be ignored and the default used
        if key.lower() in _OTHER_SPELLINGS and key not in _OTHER_SPELLINGS.values():
            raise FormatError(path, f"key {key!r}", f"a model-card key: cdface reads {_OTHER_SPELLINGS[key.lower()]!r} "
                              "(keys: arch, embedding_size, model_kwargs, input_size, mean, std, color)")
    kwargs = data.get("model_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise FormatError(path, "key 'model_kwargs'", "a JSON object")
    if data.get("arch") is not None and not isinstance(data["arch"], str):
        raise FormatError(path, "key 'arch'", f"a model name (a string), got {data['arch']!r}")
    size = data.get("embedding_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise FormatError(path, "key 'embedding_size'", f"a positive integer, got {size!r}")
    try:  # the card's input contract is checked here, so that a bad value names this file
        resolve_input_cfg(data)
    except ConfigError as exc:
        raise FormatError(path, None, f"a valid input config (input_size, mean, std, color): {exc}") from None
    return data


def write_model_json(path: str | Path, input_cfg: Mapping[str, Any], **fields: Any) -> Path:
    """Write a `model.json`: the given fields plus the input config, in plain JSON types."""
    data = dict(fields)
    data.update(InputContract.from_cfg(input_cfg).card_fields())
    path = Path(path)
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
