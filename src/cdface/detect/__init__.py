"""Face detection: photos in, faces (box, score, five landmarks) out; see `face.py` for the interface and
`registry.create_detector` for the detectors a user can name."""

from cdface.detect.face import DetectedFace, FaceDetector
from cdface.detect.registry import DEFAULT_DETECTOR, DETECTOR_HELP, create_detector

__all__ = ["DetectedFace", "FaceDetector", "create_detector", "DEFAULT_DETECTOR", "DETECTOR_HELP"]
