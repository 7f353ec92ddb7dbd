"""Landmark files as people have them: 68-point (iBUG) lines, MTCNN's x1..x5 y1..y5 order, and points that do
not fit a face (issue 24, item 7)."""

from __future__ import annotations

import numpy as np
import pytest

from cdface.data.align import ARCFACE_TEMPLATE
from cdface.data.landmarks import RESIDUAL_BOUND, fit_residual, read_landmark_file, reduce_68_to_5
from cdface.errors import FormatError


def _face(scale: float = 2.5, angle: float = 0.2, shift=(140.0, 90.0)) -> np.ndarray:
    """The ArcFace template rotated, scaled and shifted: 5 points of a plausible face in image pixels."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return ARCFACE_TEMPLATE.astype(np.float64) @ rot.T * scale + np.asarray(shift)


def _sixty_eight(face5: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """68 iBUG points whose eye rings (36-41, 42-47) are hexagons centred on the eyes, nose tip (30) and mouth
    corners (48, 54) on the 5 points; every other point is random (it must not matter)."""
    points = rng.uniform(0, 300, size=(68, 2))
    ring = 6.0 * np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], axis=1)
    points[36:42] = face5[0] + ring
    points[42:48] = face5[1] + ring
    points[30], points[48], points[54] = face5[2], face5[3], face5[4]
    return points


def _line(name: str, numbers: np.ndarray) -> str:
    return name + " " + " ".join(f"{v:.6f}" for v in np.ravel(numbers)) + "\n"


def test_68_point_lines_reduce_to_eye_centres_nose_tip_and_mouth_corners(tmp_path):
    rng = np.random.default_rng(0)
    face = _face()
    lines = _line("photos/0.png", _sixty_eight(face, rng))
    lines += _line("my photos/1.png", np.r_[_sixty_eight(face, rng).ravel(), 0.98])
    (tmp_path / "lmk68.txt").write_text(lines, encoding="utf-8")
    warnings: list[str] = []
    table = read_landmark_file(tmp_path / "lmk68.txt", on_warning=warnings.append)
    assert sorted(table) == ["my photos/1.png", "photos/0.png"]  # 136 numbers, and 137 with a score
    for points in table.values():
        np.testing.assert_allclose(points, face, atol=1e-5)
    assert warnings == []


def test_reduce_68_to_5_is_ffhq_s_rule():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 100, size=(68, 2))
    out = reduce_68_to_5(p)
    np.testing.assert_allclose(out[0], p[[36, 37, 38, 39, 40, 41]].sum(0) / 6)
    np.testing.assert_allclose(out[1], p[[42, 43, 44, 45, 46, 47]].sum(0) / 6)
    assert out[2].tolist() == p[30].tolist() and out[3].tolist() == p[48].tolist()
    assert out[4].tolist() == p[54].tolist()


def test_mtcnn_order_is_recognised_by_geometry_with_a_note_naming_the_line(tmp_path):
    face = _face(scale=3.0, angle=-0.3, shift=(400.0, 250.0))
    mtcnn = np.r_[face[:, 0], face[:, 1]]  # x1..x5 y1..y5
    (tmp_path / "lmk.txt").write_text(
        _line("a.jpg", face) + _line("b.jpg", mtcnn) + _line("c.jpg", np.r_[mtcnn, 0.99]), encoding="utf-8")
    warnings: list[str] = []
    table = read_landmark_file(tmp_path / "lmk.txt", on_warning=warnings.append)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        np.testing.assert_allclose(table[name], face, atol=1e-5)
    assert len(warnings) == 2
    assert "line 2 (b.jpg)" in warnings[0] and "MTCNN" in warnings[0]
    assert "line 3 (c.jpg)" in warnings[1]


def test_points_that_fit_no_face_are_a_warning_naming_image_and_line(tmp_path):
    face = _face()
    swapped = face[[1, 0, 2, 4, 3]]  # the subject's left and right instead of the image's
    (tmp_path / "lmk.txt").write_text("# comment\n" + _line("ok.jpg", face) + _line("bad.jpg", swapped),
                                      encoding="utf-8")
    warnings: list[str] = []
    table = read_landmark_file(tmp_path / "lmk.txt", on_warning=warnings.append)
    np.testing.assert_allclose(table["bad.jpg"], swapped, atol=1e-5)  # kept as written: a warning, not an error
    assert len(warnings) == 1 and "line 3 (bad.jpg)" in warnings[0] and "poorly" in warnings[0]


def test_warnings_are_capped_at_ten_then_counted(tmp_path):
    swapped = _face()[[1, 0, 2, 4, 3]]
    (tmp_path / "lmk.txt").write_text("".join(_line(f"{i}.jpg", swapped) for i in range(13)), encoding="utf-8")
    warnings: list[str] = []
    read_landmark_file(tmp_path / "lmk.txt", on_warning=warnings.append)
    assert len(warnings) == 11 and warnings[-1].endswith("3 more landmark lines like these")


def test_other_counts_of_numbers_are_refused_with_the_line(tmp_path):
    (tmp_path / "lmk.txt").write_text(_line("a.jpg", _face()) + _line("b.jpg", np.arange(20.0)), encoding="utf-8")
    with pytest.raises(FormatError, match=r"lmk\.txt, line 2: .*136 or 137 numbers.*got 20 numbers"):
        read_landmark_file(tmp_path / "lmk.txt")


def test_fit_residual_matches_scikit_image_similarity_fit():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(2)
    template = ARCFACE_TEMPLATE.astype(np.float64)
    eye = np.linalg.norm(template[1] - template[0])
    assert fit_residual(_face()) < 1e-6
    for _ in range(5):
        points = _face() + rng.normal(0, 4.0, size=(5, 2))
        if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
            tform = SimilarityTransform.from_estimate(points, template)
        else:
            tform = SimilarityTransform()
            tform.estimate(points, template)
        expected = np.linalg.norm(tform(points) - template, axis=1).max() / eye
        assert fit_residual(points) == pytest.approx(expected, rel=1e-6)
    assert fit_residual(np.ones((5, 2))) == float("inf")
    assert fit_residual(_face()[[1, 0, 2, 4, 3]]) > RESIDUAL_BOUND


def test_numbers_that_fit_a_face_in_both_orders_are_refused_with_the_line(tmp_path, monkeypatch):
    import cdface.data.landmarks as landmarks

    face = _face()
    (tmp_path / "lmk.txt").write_text(_line("a.jpg", face), encoding="utf-8")
    assert read_landmark_file(tmp_path / "lmk.txt", on_warning=None)["a.jpg"] == pytest.approx(face)
    monkeypatch.setattr(landmarks, "RESIDUAL_BOUND", 10.0)  # a bound so loose that the MTCNN reading fits too
    with pytest.raises(FormatError, match=r"lmk\.txt, line 1: .*fit both as x1 y1 \.\.\. x5 y5 and as MTCNN"):
        read_landmark_file(tmp_path / "lmk.txt")
