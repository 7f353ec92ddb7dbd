"""`create_detector(spec)`: the one way the commands get a face detector from what the user typed."""

from __future__ import annotations

from pathlib import Path

from cdface.detect.face import FaceDetector
from cdface.errors import CdfaceError, FormatError

__all__ = ["create_detector", "DEFAULT_DETECTOR", "DETECTOR_HELP"]

DEFAULT_DETECTOR = "mtcnn"
DETECTOR_HELP = (
    "face detector: 'mtcnn' (built in; weights from the facenet-pytorch wheel) or a path to an .onnx file "
    "(insightface's SCRFD det_10g/det_2.5g/det_500m, a RetinaFace graph with 5 keypoints, OpenCV's YuNet)"
)


def create_detector(spec: str | None = None) -> FaceDetector:
    """A `FaceDetector` for ``spec``: None or "mtcnn" (the default, MTCNN), or the path of an .onnx detector
    (SCRFD/RetinaFace decoded as insightface does, YuNet through OpenCV; the decoder is chosen from the
    graph's outputs).

    Errors (one line each): CdfaceError for an unknown name or missing MTCNN weights; FormatError naming the
    file for an .onnx that does not exist, cannot be loaded, or whose outputs are no known detector's.
    """
    name = DEFAULT_DETECTOR if spec is None or not str(spec).strip() else str(spec).strip()
    if name.lower() == "mtcnn":
        from cdface.detect.mtcnn import MTCNNDetector

        return MTCNNDetector()
    path = Path(name)
    if path.suffix.lower() == ".onnx" or path.is_file():
        if not path.is_file():
            raise FormatError(path, None, "an ONNX face detector (not found)")
        from cdface.detect.onnx_detectors import load_onnx_detector

        return load_onnx_detector(path)
    raise CdfaceError(
        f"unknown detector {name!r}: use 'mtcnn' (the default) or the path of an .onnx detector "
        "(SCRFD, RetinaFace with 5 keypoints, YuNet)"
    )
