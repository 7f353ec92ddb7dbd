"""insightface's SCRFD and RetinaFace ONNX detectors (`det_10g.onnx`, `det_2.5g.onnx`, `det_500m.onnx` of its
model packs), decoded as insightface's python package decodes them (``model_zoo/scrfd.py``, whose
``retinaface.py`` reads the same layout):

- Input: the photo resized (bilinear, aspect kept) to fit the graph's input size (its static size, else
  640x640), pasted at the top-left of a black canvas, as RGB ``(x - 127.5) / 128`` NCHW float32; the
  resize factor is ``det_scale = new_height / height``.
- Outputs, in the graph's order: the scores of every stride, then the box distances of every stride, then
  (when present) the keypoint distances. 6 or 9 outputs: strides 8/16/32 with 2 anchors per cell; 10 or 15:
  strides 8..128 with 1 anchor. Rows run over the cells row by row, the anchors of a cell consecutive.
- Decoding: anchor centre ``(x * stride, y * stride)`` of cell (y, x); distances times the stride; box
  ``[cx - l, cy - t, cx + r, cy + b]``; keypoint k ``(cx + dx_k, cy + dy_k)``; rows scoring >= 0.5 kept;
  everything divided by det_scale; NMS by IoU 0.4 with inclusive pixel areas (``x2 - x1 + 1``).

The keypoints come in the ArcFace template's order (insightface aligns with them directly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdface.detect.boxes import nms
from cdface.detect.face import DetectedFace
from cdface.detect.mtcnn import check_image

__all__ = ["SCRFDLayout", "scrfd_layout", "anchor_centres", "decode_scrfd", "letterbox", "SCRFDDetector"]

DEFAULT_INPUT_SIZE = (640, 640)  # (width, height), insightface's det_size
SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.4


@dataclass(frozen=True)
class SCRFDLayout:
    """How a graph's outputs are laid out: its strides, anchors per cell and whether it has keypoints."""

    strides: tuple[int, ...]
    num_anchors: int
    keypoints: bool


def scrfd_layout(num_outputs: int) -> SCRFDLayout | None:
    """The layout insightface infers from the number of outputs; None for a count it does not know."""
    return {
        6: SCRFDLayout((8, 16, 32), 2, False),
        9: SCRFDLayout((8, 16, 32), 2, True),
        10: SCRFDLayout((8, 16, 32, 64, 128), 1, False),
        15: SCRFDLayout((8, 16, 32, 64, 128), 1, True),
    }.get(num_outputs)


def anchor_centres(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
    """(height * width * num_anchors, 2) float32 ``[x, y]`` centres: cells row by row, each repeated for its
    anchors, at ``(x * stride, y * stride)``."""
    ys, xs = np.mgrid[:height, :width]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * np.float32(stride)
    return np.repeat(centres, num_anchors, axis=0)


def decode_scrfd(outputs: list[np.ndarray], layout: SCRFDLayout, input_height: int, input_width: int,
                 threshold: float = SCORE_THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The rows scoring >= threshold, in input pixels: boxes (N, 4), scores (N,), keypoints (N, 5, 2) or None.

    outputs: the graph's outputs in its order (a leading batch axis of 1 is dropped). Raises ValueError when
    an output's row count does not match its stride's cells.
    """
    count = len(layout.strides)
    boxes, scores, points = [], [], []
    for k, stride in enumerate(layout.strides):
        height, width = input_height // stride, input_width // stride
        centres = anchor_centres(height, width, stride, layout.num_anchors)
        score = _rows(outputs[k], 1, len(centres), f"scores of stride {stride}")[:, 0]
        distance = _rows(outputs[k + count], 4, len(centres), f"boxes of stride {stride}") * np.float32(stride)
        keep = np.flatnonzero(score >= threshold)
        c, d = centres[keep], distance[keep]
        boxes.append(np.concatenate([c - d[:, 0:2], c + d[:, 2:4]], axis=1))
        scores.append(score[keep])
        if layout.keypoints:
            offsets = _rows(outputs[k + 2 * count], 10, len(centres), f"keypoints of stride {stride}")
            points.append(c[:, None, :] + offsets[keep].reshape(-1, 5, 2) * np.float32(stride))
    kps = np.concatenate(points).astype(np.float32) if layout.keypoints else None
    return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32), kps


def _rows(array: np.ndarray, columns: int, rows: int, what: str) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 1:  # a batched graph's (1, rows, columns)
        array = array[0]
    if array.size != rows * columns:
        raise ValueError(f"{what}: {rows} x {columns} values expected, got shape {array.shape}")
    return array.reshape(rows, columns)


def letterbox(image: np.ndarray, input_width: int, input_height: int) -> tuple[np.ndarray, float]:
    """insightface's input: the photo resized (bilinear) to fit (input_width, input_height) with its aspect
    kept, at the top-left of a zero canvas. Returns the (input_height, input_width, 3) canvas and det_scale."""
    import cv2

    height, width = image.shape[:2]
    if height / width > input_height / input_width:
        new_height = input_height
        new_width = int(new_height / (height / width))
    else:
        new_width = input_width
        new_height = int(new_width * (height / width))
    new_width, new_height = max(new_width, 1), max(new_height, 1)
    canvas = np.zeros((input_height, input_width, 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = cv2.resize(image, (new_width, new_height))
    return canvas, new_height / height


class SCRFDDetector:
    """An SCRFD/RetinaFace graph under onnxruntime, as `cdface.detect.FaceDetector`."""

    name = "scrfd"

    def __init__(self, session: Any, path: Path, layout: SCRFDLayout, input_size: tuple[int, int]) -> None:
        self.session, self.path, self.layout = session, path, layout
        self.input_width, self.input_height = input_size
        self.input_name = session.get_inputs()[0].name
        self.output_names = [o.name for o in session.get_outputs()]
        self.name = f"scrfd:{path.name}"

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """(H, W, 3) uint8 RGB -> faces sorted by score; FormatError naming the graph when its outputs do not
        have the rows its layout implies."""
        from cdface.errors import FormatError

        image = check_image(image)
        canvas, det_scale = letterbox(image, self.input_width, self.input_height)
        blob = ((canvas.astype(np.float32) - np.float32(127.5)) / np.float32(128.0)).transpose(2, 0, 1)[None]
        outputs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(blob)})
        try:
            boxes, scores, points = decode_scrfd(outputs, self.layout, self.input_height, self.input_width)
        except ValueError as exc:
            raise FormatError(self.path, None, f"an SCRFD/RetinaFace graph's outputs ({exc})") from None
        scale = np.float32(det_scale)
        boxes, points = boxes / scale, points / scale if points is not None else None
        keep = nms(boxes, scores, NMS_THRESHOLD, "iou", pixel_offset=1.0)
        assert points is not None  # graphs without keypoints are refused when loaded
        return [DetectedFace(box=boxes[i], score=float(scores[i]), landmarks=points[i]) for i in keep]
