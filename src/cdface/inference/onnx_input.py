"""What an ONNX face model's input takes, read from the graph: element type, layout, channels, size, batch, and
whether the graph normalises the pixels itself.

ONNX files come as people have them: float32 / float16 / float64 or uint8 input, NCHW or NHWC (graphs converted
from TensorFlow), 3 channels or 1 (grey models such as LightCNN), and graphs whose first nodes normalise the
pixels (mxnet-converted ArcFace models: `_minusscalar0` 127.5 then `_mulscalar0` 0.0078125). insightface's own
loader (`python-package/insightface/model_zoo/arcface_onnx.py`) recognises the last kind by Sub and Mul among the
first 8 node names and then feeds raw pixels (mean 0, std 1); here the same idea is applied to the graph's
structure: the chain of Cast / Transpose / Identity / Sub / Add / Mul / Div nodes with constant operands that the
input flows through before its first other node is composed into one per-channel affine map `a x + b`, and

- it maps 0..255 onto a normalised span (|a x + b| <= 3 at 0 and 255, span >= 0.9): the graph takes **pixels**
  (fed as 0..255 floats: mean 0, std 1/255 in cdface's `(x/255 - mean)/std` units);
- it maps 0..1 onto a normalised span (span >= 1.5, not the identity): the graph takes **unit** values (x/255:
  mean 0, std 1);
- anything else is not taken as normalisation (the model card or the default decides).

A uint8 input is always fed the pixels as they are. What cannot be fed (another element type, a rank other than
4, 2 or 4 channels, several inputs) is a one-line FormatError naming the input's type and shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdface.errors import FormatError
from cdface.models.onnx_weights import graph_constants

__all__ = ["InnerNormalisation", "OnnxInput", "read_onnx_input", "PIXEL_STD"]

PIXEL_STD = 1.0 / 255.0  # (x/255 - 0) / (1/255) = x: cdface's units for "feed raw 0..255 pixels"

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
}
_PASS_THROUGH = ("Cast", "Identity", "Transpose")
_AFFINE = ("Sub", "Add", "Mul", "Div")
_MAX_CHAIN = 16


@dataclass(frozen=True)
class InnerNormalisation:
    """The normalisation a graph applies to its input itself: the nodes, and what range it expects."""

    ops: tuple[str, ...]  # e.g. ("Sub 127.5", "Mul 0.0078125")
    input_range: str  # "pixels" (0..255) or "unit" (0..1)
    scale: tuple[float, ...] = (1.0,)  # the composed map a x + b of the values fed (1 or 3 channels)
    shift: tuple[float, ...] = (0.0,)

    def pixel_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b), each (3,), such that what the network body receives is a * pixels + b (pixels 0..255)."""
        a = np.broadcast_to(np.asarray(self.scale, dtype=np.float64), (3,))
        b = np.broadcast_to(np.asarray(self.shift, dtype=np.float64), (3,))
        return (a if self.input_range == "pixels" else a / 255.0), b

    @property
    def mean(self) -> tuple[float, float, float]:
        return (0.0, 0.0, 0.0)

    @property
    def std(self) -> tuple[float, float, float]:
        value = PIXEL_STD if self.input_range == "pixels" else 1.0
        return (value, value, value)

    def describe(self) -> str:
        expects = "0..255 pixels" if self.input_range == "pixels" else "0..1 values"
        return f"the graph normalises its input itself ({', '.join(self.ops)}): fed {expects}"


@dataclass(frozen=True)
class OnnxInput:
    """The graph's one image input."""

    name: str
    type: str  # onnxruntime's type string, e.g. "tensor(uint8)"
    shape: tuple[Any, ...]  # as the graph declares it (ints, names of symbolic axes, or None)
    dtype: type  # the numpy type fed
    channels: int  # 1 or 3
    channels_last: bool
    size: tuple[int, int] | None  # (H, W) when the graph fixes it
    fixed_batch: int | None
    inner: InnerNormalisation | None

    @property
    def is_uint8(self) -> bool:
        return self.dtype is np.uint8


def read_onnx_input(path: Path, session: Any) -> OnnxInput:
    """Inspect `session`'s (an onnxruntime InferenceSession of `path`) input; FormatError if it cannot be fed."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        listed = "; ".join(f"{i.name!r} {i.type} {list(i.shape)}" for i in inputs)
        raise FormatError(path, None, f"a graph with one image input; it takes {len(inputs)}: {listed}")
    graph_input = inputs[0]
    shape = tuple(graph_input.shape)
    where = f"input {graph_input.name!r} {graph_input.type} {list(shape)}"
    feedable = ("cdface feeds images as one 4-D float32/float16/float64 or uint8 tensor with 1 or 3 channels, "
                "NCHW or NHWC")
    dtype = _DTYPES.get(graph_input.type)
    if dtype is None or len(shape) != 4:
        raise FormatError(path, where, f"cannot be fed: {feedable}")
    c_first, c_last = shape[1], shape[3]
    if _is_int(c_first) and c_first in (1, 3):
        channels, channels_last = int(c_first), False
    elif _is_int(c_last) and c_last in (1, 3):
        channels, channels_last = int(c_last), True
    elif not _is_int(c_first) and not _is_int(c_last):
        channels, channels_last = 3, False  # nothing fixed: NCHW RGB, as insightface's loader assumes
    else:
        raise FormatError(path, where, f"cannot be fed: {feedable}")
    hw = shape[1:3] if channels_last else shape[2:4]
    size = (int(hw[0]), int(hw[1])) if all(_is_int(v) and v > 0 for v in hw) else None
    fixed_batch = int(shape[0]) if _is_int(shape[0]) and shape[0] > 0 else None
    return OnnxInput(
        name=graph_input.name, type=graph_input.type, shape=shape, dtype=dtype, channels=channels,
        channels_last=channels_last, size=size, fixed_batch=fixed_batch,
        inner=_inner_normalisation(path, graph_input.name),
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _inner_normalisation(path: Path, input_name: str) -> InnerNormalisation | None:
    """Compose the constant affine nodes the input flows through first (see the module docstring)."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx comes with the onnx extra, beside onnxruntime
        return None
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # onnxruntime read it; a file onnx cannot parse is simply not inspected
        return None
    constants = graph_constants(graph, max_elements=4)  # scalars / per-channel vectors only
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    scale, shift = np.ones(1), np.zeros(1)
    ops: list[str] = []
    current = input_name
    for _ in range(_MAX_CHAIN):
        users = consumers.get(current, [])
        if len(users) != 1:
            break
        node = users[0]
        if node.op_type in _PASS_THROUGH:
            current = node.output[0]
            continue
        if node.op_type not in _AFFINE or len(node.input) != 2:
            break
        first = node.input[0] == current
        other = node.input[1] if first else node.input[0]
        if other not in constants:
            break
        value = np.asarray(constants[other], dtype=np.float64).ravel()
        if value.size not in (1, 3):
            break
        if node.op_type == "Sub":
            scale, shift = (scale, shift - value) if first else (-scale, value - shift)
        elif node.op_type == "Add":
            shift = shift + value
        elif node.op_type == "Mul":
            scale, shift = scale * value, shift * value
        elif first and not np.any(value == 0):  # Div by a constant
            scale, shift = scale / value, shift / value
        else:
            break
        ops.append(f"{node.op_type} {','.join(f'{v:g}' for v in value)}")
        current = node.output[0]
    if not ops:
        return None
    span = np.abs(scale)
    if max(np.abs(shift).max(), np.abs(255 * scale + shift).max()) <= 3 and (255 * span).min() >= 0.9:
        return InnerNormalisation(tuple(ops), "pixels", tuple(scale.tolist()), tuple(shift.tolist()))
    identity = np.allclose(scale, 1) and np.allclose(shift, 0)
    if not identity and max(np.abs(shift).max(), np.abs(scale + shift).max()) <= 3 and span.min() >= 1.5:
        return InnerNormalisation(tuple(ops), "unit", tuple(scale.tolist()), tuple(shift.tolist()))
    return None
