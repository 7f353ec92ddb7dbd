"""Box arithmetic shared by the detectors: greedy non-maximum suppression, box regression, squaring.

Boxes are (N, 4) ``[x1, y1, x2, y2]`` in pixels. The MTCNN cascade mixes two conventions of its reference
(facenet-pytorch 2.6.0, after Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", 2016): continuous boxes (width ``x2 - x1``) for its first two NMS passes and
inclusive pixel boxes (width ``x2 - x1 + 1``) for the box regression of the later stages and the last NMS,
so every function here takes the convention as ``pixel_offset`` (0 or 1).
"""

from __future__ import annotations

import numpy as np

__all__ = ["nms", "regress_boxes", "square_boxes"]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, overlap: str = "iou",
        pixel_offset: float = 0.0) -> np.ndarray:
    """Greedy NMS: indices of the boxes kept, highest score first.

    boxes: (N, 4); scores: (N,). A box is dropped when its overlap with a higher-scoring kept box is
    **above** ``threshold``. ``overlap``: "iou" (intersection / union) or "min" (intersection / the smaller
    area, MTCNN's "Min"). Widths and heights are ``x2 - x1 + pixel_offset``. Ties in score keep the
    input order (stable sort). Returns (K,) int64.
    """
    if overlap not in ("iou", "min"):
        raise ValueError(f"overlap must be 'iou' or 'min', got {overlap!r}")
    boxes = np.asarray(boxes)
    order = np.argsort(-np.asarray(scores), kind="stable")
    if order.size == 0:
        return order.astype(np.int64)
    x1, y1, x2, y2 = (boxes[order, k] for k in range(4))
    area = (x2 - x1 + pixel_offset) * (y2 - y1 + pixel_offset)
    alive = np.ones(order.size, dtype=bool)
    keep: list[int] = []
    # greedy by nature: one pass per kept box, each suppressing all lower-scoring boxes at once
    for i in range(order.size):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        if rest.size == 0:
            break
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + pixel_offset, 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + pixel_offset, 0)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if overlap == "min" else area[i] + area[rest] - inter
        alive[rest[inter / denom > threshold]] = False
    return order[np.asarray(keep, dtype=np.int64)]


def regress_boxes(boxes: np.ndarray, offsets: np.ndarray, pixel_offset: float = 0.0) -> np.ndarray:
    """Apply a detector's box regression: ``x1 + dx1 * w, y1 + dy1 * h, x2 + dx2 * w, y2 + dy2 * h`` with
    ``w = x2 - x1 + pixel_offset`` (and h likewise). boxes, offsets: (N, 4); returns (N, 4), boxes' dtype."""
    boxes = np.asarray(boxes)
    size = boxes[:, 2:4] - boxes[:, 0:2] + np.asarray(pixel_offset, dtype=boxes.dtype)
    scale = np.concatenate([size, size], axis=1)
    return (boxes + np.asarray(offsets, dtype=boxes.dtype) * scale).astype(boxes.dtype, copy=False)


def square_boxes(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square of side ``max(w, h)`` (``w = x2 - x1``) about the same centre, as MTCNN
    does before cropping for its next network. (N, 4) -> (N, 4), boxes' dtype."""
    boxes = np.asarray(boxes)
    size = boxes[:, 2:4] - boxes[:, 0:2]
    side = size.max(axis=1, keepdims=True)
    half = np.asarray(0.5, dtype=boxes.dtype)
    corner = boxes[:, 0:2] + size * half - side * half
    return np.concatenate([corner, corner + side], axis=1).astype(boxes.dtype, copy=False)
