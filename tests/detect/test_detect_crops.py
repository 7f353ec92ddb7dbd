"""Face selection, naming and cropping of detected faces (`cdface.detect.crops`, `cdface.detect.photos`)."""

from __future__ import annotations

import numpy as np
import pytest
from photo_helpers import FakeDetector, write_photo

from cdface.data.align import ARCFACE_TEMPLATE
from cdface.detect import DetectedFace
from cdface.detect.crops import FaceSelection, align_detected, face_name, largest_face
from cdface.detect.photos import find_faces


def _face(x1, y1, x2, y2, score):
    return DetectedFace(np.array([x1, y1, x2, y2], np.float32), score, np.zeros((5, 2), np.float32))


def test_selection_filters_by_score_size_and_count():
    faces = [_face(0, 0, 50, 60, 0.7), _face(0, 0, 20, 100, 0.99), _face(0, 0, 80, 80, 0.9)]
    assert FaceSelection().apply(faces) == [faces[1], faces[2], faces[0]]  # score order, whatever came in
    assert FaceSelection(min_score=0.8).apply(faces) == [faces[1], faces[2]]
    assert FaceSelection(min_face_size=30).apply(faces) == [faces[2], faces[0]]  # the shorter side counts
    assert FaceSelection(max_faces=2, min_face_size=30).apply(faces) == [faces[2], faces[0]]
    assert FaceSelection(max_faces=1).apply(faces) == [faces[1]]
    assert FaceSelection(min_score=1.0).apply(faces) == [] and FaceSelection().apply([]) == []
    assert FaceSelection(min_score=0.5, min_face_size=40).describe() == "score >= 0.5, box side >= 40 px"
    with pytest.raises(ValueError):
        FaceSelection(max_faces=0)


def test_largest_face_and_names():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 40, 30], [0, 0, 30, 35]], np.float32)  # areas 100, 875, 1050
    assert largest_face(boxes) == 2
    assert largest_face(np.array([[0, 0, 10, 10], [0, 0, 10, 10]])) == 0
    face = _face(10.4, 20.6, 99.5, 120.2, 0.9)
    assert face_name("a/b.jpg", 2, face) == "a/b.jpg#face2 box=10,21,100,120"
    assert face_name("a/b.jpg", 1) == "a/b.jpg#face1"


def test_align_detected_is_the_template_crop():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    canvas = np.zeros((200, 220, 3), np.uint8)
    canvas[30:142, 50:162] = crop
    face = DetectedFace(np.array([50, 30, 162, 142], np.float32), 0.9, ARCFACE_TEMPLATE + np.float32([50, 30]))
    out = align_detected(canvas, [face, face])
    assert out.shape == (2, 112, 112, 3) and out.dtype == np.uint8
    assert np.abs(out[0].astype(int) - crop).max() <= 1  # a pure translation: the crop comes back


def test_find_faces_reports_photos_without_faces_and_unreadable_ones(tmp_path):
    detector = FakeDetector()
    write_photo(tmp_path / "two.png", [0, 1], detector)
    write_photo(tmp_path / "none.png", [], detector, extra_rows=1)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    paths = [tmp_path / "two.png", tmp_path / "broken.jpg", tmp_path / "none.png"]
    found = find_faces(detector, paths)
    assert [(r.photo, r.number) for r in found.rows] == [(0, 1), (0, 2)]
    assert found.no_face == [f"{tmp_path / 'none.png'}: no face found (fake)"]
    assert len(found.errors) == 1 and "broken.jpg" in found.errors[0]
    assert found.landmarks.shape == (2, 5, 2) and found.landmarks.dtype == np.float32
    low = find_faces(detector, paths[:1], FaceSelection(min_score=0.999))
    assert low.rows == [] and "2 face(s) found, none with score >= 0.999" in low.no_face[0]
