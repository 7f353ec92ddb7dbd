"""From the faces a detector found to the faces a command keeps, and their names in outputs.

Every command that takes photos (`embed`, `compare`, `search` with `--detect`, `data pack --detect`) filters
the detector's faces with one `FaceSelection` (score, size, count), names each kept face the same way
(`face_name`), and crops it with the landmarks the detector gave through `cdface.data.align.align_face`
(insightface's `norm_crop`, pixel for pixel), so a face found here gives the crop the field's tools give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cdface.data.align import align_face
from cdface.detect.face import DetectedFace

__all__ = ["FaceSelection", "align_detected", "face_name", "largest_face"]


@dataclass(frozen=True)
class FaceSelection:
    """Which of a photo's detected faces are kept.

    min_score: detector confidence in [0, 1] a face needs (the detector's own threshold applies first).
    min_face_size: pixels the box's shorter side needs (in the photo's coordinates).
    max_faces: at most this many faces per photo, the highest-scored first (None: all).
    """

    max_faces: int | None = None
    min_face_size: float = 0.0
    min_score: float = 0.0

    def __post_init__(self) -> None:
        if self.max_faces is not None and self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1 or None, got {self.max_faces}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score is a detector score in [0, 1], got {self.min_score}")
        if self.min_face_size < 0:
            raise ValueError(f"min_face_size is a size in pixels >= 0, got {self.min_face_size}")

    def apply(self, faces: Sequence[DetectedFace]) -> list[DetectedFace]:
        """The kept faces, in the detector's order (highest score first)."""
        if not faces:
            return []
        boxes = np.stack([np.asarray(f.box, dtype=np.float64) for f in faces])  # (F, 4)
        scores = np.array([f.score for f in faces], dtype=np.float64)
        short_side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        order = np.argsort(-scores, kind="stable")  # detectors sort already; a fake or a plug-in may not
        keep = order[(scores[order] >= self.min_score) & (short_side[order] >= self.min_face_size)]
        return [faces[i] for i in keep[: self.max_faces]]

    def describe(self) -> str:
        """The filters in force, for messages ("score >= 0.9, box side >= 40 px"); empty when none is."""
        parts = []
        if self.min_score > 0:
            parts.append(f"score >= {self.min_score:g}")
        if self.min_face_size > 0:
            parts.append(f"box side >= {self.min_face_size:g} px")
        return ", ".join(parts)


def largest_face(boxes: np.ndarray) -> int:
    """Index of the largest of (F, 4) ``[x1, y1, x2, y2]`` boxes by area (the first of equal ones, i.e. the
    higher-scored for a detector's faces). Raises ValueError for no boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        raise ValueError("no faces to choose from")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return int(np.argmax(areas))


def face_name(photo: str, number: int, face: DetectedFace | None = None) -> str:
    """A face's name in `<out>.paths.txt` and search results: ``<photo>#face<number>`` (1-based, in score
    order), followed by `` box=x1,y1,x2,y2`` (whole pixels) when the face came from a detector."""
    name = f"{photo}#face{number}"
    if face is None:
        return name
    x1, y1, x2, y2 = (int(round(float(v))) for v in face.box)
    return f"{name} box={x1},{y1},{x2},{y2}"


def align_detected(image: np.ndarray, faces: Sequence[DetectedFace], size: int = 112) -> np.ndarray:
    """(F, size, size, 3) uint8 crops of `image` (H, W, 3) uint8 RGB, one per face, aligned with its five
    landmarks to the ArcFace template (`align_face` = insightface's `norm_crop`; the detector's float32
    landmarks keep the estimate in float32, as with insightface's detectors)."""
    if not faces:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([align_face(image, np.asarray(f.landmarks), size=size) for f in faces])
