"""ONNX face detectors (SCRFD, RetinaFace, YuNet), chosen from the graph's outputs."""

from __future__ import annotations

from pathlib import Path

from cdface.detect.face import FaceDetector
from cdface.errors import FormatError

__all__ = ["load_onnx_detector"]


def load_onnx_detector(path: Path) -> FaceDetector:
    """A detector for the .onnx file at ``path`` (in progress: not supported yet)."""
    raise FormatError(path, None, "an ONNX face detector: ONNX detectors are not supported yet")
