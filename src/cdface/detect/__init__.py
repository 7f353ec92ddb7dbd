"""Face detection: photos in, faces (box, score, five landmarks) out; see `face.py` for the interface."""

from cdface.detect.face import DetectedFace, FaceDetector

__all__ = ["DetectedFace", "FaceDetector"]
