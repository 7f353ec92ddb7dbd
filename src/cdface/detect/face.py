"""What a face detector finds, and the one interface every detector offers.

A detector turns one decoded photo into faces, each with a box, a score and the five landmarks that
`cdface.data.align.align_face` takes (the ArcFace template's order). The photo pipeline (`--detect` in
embed, compare, search, eval, `data pack`) only sees this interface, so MTCNN, SCRFD/RetinaFace ONNX graphs
and YuNet are interchangeable behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class DetectedFace:
    """One face found in a photo, in that photo's pixel coordinates (x to the right, y down).

    box: (4,) float32 ``[x1, y1, x2, y2]``.
    score: the detector's confidence in [0, 1].
    landmarks: (5, 2) float32 ``[[x, y], ...]`` in the ArcFace template's order: the eye on the image's left,
        the eye on the image's right, the nose tip, the mouth corner on the image's left, the one on its right.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    def to_json(self) -> dict[str, object]:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 5),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }


class FaceDetector(Protocol):
    """A face detector: ``detect(image)`` with ``image`` a (H, W, 3) uint8 RGB array returns the faces found,
    sorted by score, highest first (an empty list when there is none). ``name`` says which detector it is."""

    name: str

    def detect(self, image: np.ndarray) -> list[DetectedFace]: ...
