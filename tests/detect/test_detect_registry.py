"""create_detector: the names and files a user can give, and the one-line errors for the rest."""

from __future__ import annotations

import importlib.metadata

import pytest

from cdface.detect import create_detector
from cdface.detect.mtcnn import MTCNNDetector
from cdface.errors import CdfaceError, FormatError


@pytest.mark.parametrize("spec", [None, "mtcnn", "MTCNN", ""])
def test_default_and_mtcnn_give_mtcnn(spec, mtcnn_weights):
    detector = create_detector(spec)
    assert isinstance(detector, MTCNNDetector)
    assert detector.name == "mtcnn"


def test_unknown_name_is_one_line_error():
    with pytest.raises(CdfaceError, match="unknown detector 'retina'") as err:
        create_detector("retina")
    assert "\n" not in str(err.value)


def test_missing_onnx_file_names_it(tmp_path):
    missing = tmp_path / "det_10g.onnx"
    with pytest.raises(FormatError, match="det_10g.onnx.*not found"):
        create_detector(str(missing))


def test_missing_weights_say_how_to_install(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(CdfaceError, match="pip install --no-deps facenet-pytorch==2.6.0"):
        create_detector("mtcnn")


def test_a_file_that_is_no_onnx_graph_is_a_format_error(tmp_path):
    pytest.importorskip("onnxruntime")
    weights = tmp_path / "pnet.pt"
    weights.write_bytes(b"PK\x03\x04 not a graph")
    with pytest.raises(FormatError, match="pnet.pt.*ONNX face detector") as err:
        create_detector(str(weights))
    assert "\n" not in str(err.value)
