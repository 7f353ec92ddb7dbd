"""`--detector FILE.onnx`: which decoder a graph needs, chosen from its outputs.

- YuNet (outputs cls/obj/bbox/kps_8/16/32): `cdface.detect.yunet`, through OpenCV.
- 6, 9, 10 or 15 outputs whose last axes are scores (1), box distances (4) and keypoints (10) per stride:
  insightface's SCRFD or RetinaFace layout, `cdface.detect.scrfd`. Graphs without keypoints are refused:
  alignment needs the five points.
- Anything else: a one-line FormatError naming the file and its outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cdface.detect.face import FaceDetector
from cdface.detect.scrfd import DEFAULT_INPUT_SIZE, SCRFDDetector, scrfd_layout
from cdface.detect.yunet import YuNetDetector, is_yunet
from cdface.errors import CdfaceError, FormatError

__all__ = ["load_onnx_detector", "choose_decoder"]


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def choose_decoder(output_names: list[str], output_shapes: list[list[Any]]) -> str:
    """"yunet", "scrfd", or "scrfd-no-keypoints" for a graph's outputs; "" when no decoder knows them."""
    if is_yunet(output_names):
        return "yunet"
    layout = scrfd_layout(len(output_names))
    if layout is None:
        return ""
    count = len(layout.strides)
    widths = [1] * count + [4] * count + ([10] * count if layout.keypoints else [])
    for shape, width in zip(output_shapes, widths):
        if not shape or len(shape) not in (2, 3) or _static(shape[-1]) not in (None, width):
            return ""
    return "scrfd" if layout.keypoints else "scrfd-no-keypoints"


def load_onnx_detector(path: Path) -> FaceDetector:
    """The detector for the .onnx at ``path``; FormatError (one line, naming the file) when it cannot be loaded
    or no decoder knows its outputs, CdfaceError when onnxruntime is missing."""
    path = Path(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise CdfaceError("ONNX detectors need onnxruntime: pip install 'cdface[onnx]'") from None
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FormatError(path, None, f"an ONNX face detector that onnxruntime loads ({reason})") from None
    outputs = session.get_outputs()
    names, shapes = [o.name for o in outputs], [list(o.shape or []) for o in outputs]
    decoder = choose_decoder(names, shapes)
    if decoder == "yunet":
        return YuNetDetector(path)
    if decoder == "scrfd":
        dims = list(session.get_inputs()[0].shape or [])
        height, width = (_static(dims[2]), _static(dims[3])) if len(dims) == 4 else (None, None)
        size = (width, height) if width and height else DEFAULT_INPUT_SIZE
        return SCRFDDetector(session, path, scrfd_layout(len(names)), size)  # type: ignore[arg-type]
    if decoder == "scrfd-no-keypoints":
        raise FormatError(path, None, "a face detector with 5 keypoints: this SCRFD/RetinaFace graph has none "
                                      "(alignment needs them; det_10g, det_2.5g and det_500m have them)")
    described = ", ".join(f"{n}{tuple(s)}" for n, s in zip(names, shapes))
    raise FormatError(path, None, "a face detector: SCRFD/RetinaFace (6/9/10/15 outputs: scores, boxes, "
                                  f"keypoints per stride) or YuNet (cls/obj/bbox/kps_8/16/32); its outputs are "
                                  f"{described}")
