"""A model's input contract (size, mean/std, colour order) and the one preprocessing that applies it.

Every face model expects one exact preprocessing; getting it wrong (BGR vs RGB, [0,1] vs [-1,1]) silently
costs accuracy. The contract is data on the model (`model.input_cfg`, set by `create_model`), and the training
loop, its periodic verification, the inference front (`cdface.inference.loading`) and the model card
(`model.json`) all derive what they do from it through `InputContract` -- as timm derives its transforms from
`model.pretrained_cfg` with `resolve_data_config`. Layers merge with a fixed precedence: explicit arguments >
model.json > the module's own `input_cfg` > the project default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from cdface.errors import ConfigError

__all__ = ["DEFAULT_INPUT_CFG", "InputContract", "parse_triple", "resolve_input_cfg"]

# insightface's arcface_torch: ToTensor + Normalize(0.5, 0.5) on RGB 112x112 aligned crops, i.e. [-1, 1]
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
    if isinstance(text, (int, float)) and not isinstance(text, bool):  # a card's JSON number: one value
        text = [text]
    try:
        values = [float(v) for v in text.split(",")] if isinstance(text, str) else [float(v) for v in text]
    except (TypeError, ValueError):
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
    """Merge input configs, later layers winning, then explicit overrides; validate and normalise types.

    Returns {"input_size": (H, W) ints, "mean": 3 floats, "std": 3 floats, "color": "RGB" | "BGR"}, mean/std in
    0..1 units and in the model's channel order. ConfigError (a ValueError) for a malformed value.
    """
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
    try:
        size = tuple(int(v) for v in cfg["input_size"])
    except (TypeError, ValueError):
        size = ()
    mean_t = parse_triple(cfg["mean"], "mean")
    std_t = parse_triple(cfg["std"], "std")
    color = str(cfg["color"]).upper()
    if len(size) != 2 or min(size) <= 0:
        raise ConfigError(f"input_size must be (height, width), got {cfg['input_size']!r}")
    if std_t is None or min(std_t) <= 0:
        raise ConfigError(f"std must be positive, got {cfg['std']!r}")
    if color not in _COLORS:
        raise ConfigError(f"color must be one of {_COLORS}, got {cfg['color']!r}")
    return {"input_size": size, "mean": mean_t, "std": std_t, "color": color}


@dataclass(frozen=True)
class InputContract:
    """What a model takes: aligned crops of `input_size` (H, W), channels in `color` order, `(x/255 - mean)/std`.

    mean/std are in 0..1 units and in the model's channel order. Calling the contract on a uint8 (N, 3, H, W)
    RGB batch (any device) returns the model's float32 input; the formula and its float32 rounding are
    arcface_torch's (ToTensor then Normalize), so the default contract equals `to_tensor`/`normalize_uint8` bit
    for bit.
    """

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color: str

    @classmethod
    def from_cfg(cls, *layers: Mapping[str, Any] | None, **overrides: Any) -> InputContract:
        """The contract of merged input configs (see `resolve_input_cfg`)."""
        return cls(**resolve_input_cfg(*layers, **overrides))

    @classmethod
    def from_model(cls, model: Any) -> InputContract:
        """The contract a model carries as `input_cfg` (the project default for a module without one)."""
        return cls.from_cfg(getattr(model, "input_cfg", None))

    def as_cfg(self) -> dict[str, Any]:
        """The `input_cfg` dict form (tuples)."""
        return {"input_size": self.input_size, "mean": self.mean, "std": self.std, "color": self.color}

    def card_fields(self) -> dict[str, Any]:
        """The model card's (`model.json`) input fields, in JSON types."""
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
                "color": self.color}

    def size_text(self) -> str:
        return f"{self.input_size[0]}x{self.input_size[1]}"

    def __call__(self, images: Tensor) -> Tensor:
        """uint8 (or float 0..255) (N, 3, H, W) RGB at `input_size` -> float32 (N, 3, H, W) model input.

        Channels are reordered first when the model takes BGR (mean/std are in the model's order). ValueError
        for another layout or size: callers resize (inference) or refuse (training) before.
        """
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != self.input_size:
            raise ValueError(
                f"expected images (N, 3, {self.input_size[0]}, {self.input_size[1]}) for this model's input "
                f"contract, got {tuple(images.shape)}"
            )
        if self.color == "BGR":
            images = images.flip(1)
        x = images.float()
        # ToTensor's x/255 then Normalize's (x - mean)/std, in float32 with python-scalar operands: no small
        # per-step host-to-device copy of mean/std tensors, and the same rounding as to_tensor/normalize_uint8
        x = x.div_(255.0) if x is not images else x.div(255.0)
        if len(set(self.mean)) == 1 and len(set(self.std)) == 1:
            return x.sub_(self.mean[0]).div_(self.std[0])
        for c in range(3):
            x[:, c].sub_(self.mean[c]).div_(self.std[c])
        return x
