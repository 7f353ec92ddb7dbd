"""OpenCV's YuNet face detector (the OpenCV Zoo's `face_detection_yunet_*.onnx`) through `cv2.FaceDetectorYN`,
with OpenCV's defaults (score 0.9, NMS 0.3, top 5000) and the photo at its own size.

`cv2.FaceDetectorYN.detect` takes BGR and returns one row per face: ``x, y, w, h``, then five points ``x_re,
y_re, x_le, y_le, x_nt, y_nt, x_rcm, y_rcm, x_lcm, y_lcm`` named from the person's side (their right eye is the
eye on the image's left), then the score. That point order is the ArcFace template's (image-left eye first),
so the points are taken as they come; OpenCV's own `FaceRecognizerSF.alignCrop` aligns them to that template.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdface.detect.face import DetectedFace
from cdface.detect.mtcnn import check_image
from cdface.errors import FormatError

__all__ = ["YUNET_OUTPUTS", "is_yunet", "yunet_faces", "YuNetDetector"]

YUNET_OUTPUTS = frozenset(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32))
SCORE_THRESHOLD = 0.9
NMS_THRESHOLD = 0.3
TOP_K = 5000


def is_yunet(output_names: list[str]) -> bool:
    """True for YuNet's outputs (cls/obj/bbox/kps at strides 8, 16, 32)."""
    return YUNET_OUTPUTS <= set(output_names)


def yunet_faces(rows: np.ndarray | None) -> list[DetectedFace]:
    """`cv2.FaceDetectorYN.detect`'s (N, 15) rows (or None) -> faces sorted by score: box ``[x, y, x + w,
    y + h]``, the five points in their order, the score."""
    if rows is None or len(rows) == 0:
        return []
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, 15)
    order = np.argsort(-rows[:, 14], kind="stable")
    faces = []
    for row in rows[order]:
        box = np.array([row[0], row[1], row[0] + row[2], row[1] + row[3]], dtype=np.float32)
        faces.append(DetectedFace(box=box, score=float(row[14]), landmarks=row[4:14].reshape(5, 2).copy()))
    return faces


class YuNetDetector:
    """A YuNet graph under `cv2.FaceDetectorYN`, as `cdface.detect.FaceDetector`."""

    def __init__(self, path: Path) -> None:
        import cv2

        self.path = Path(path)
        self.name = f"yunet:{self.path.name}"
        try:
            self.detector = cv2.FaceDetectorYN.create(str(self.path), "", (320, 320), SCORE_THRESHOLD,
                                                      NMS_THRESHOLD, TOP_K)
        except cv2.error as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "OpenCV could not load it"
            raise FormatError(self.path, None, f"a YuNet graph that OpenCV's FaceDetectorYN loads ({reason})") from None

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """(H, W, 3) uint8 RGB -> faces sorted by score (OpenCV gets the BGR photo at its own size)."""
        image = check_image(image)
        height, width = image.shape[:2]
        self.detector.setInputSize((width, height))
        _, rows = self.detector.detect(np.ascontiguousarray(image[:, :, ::-1]))
        return yunet_faces(rows)
