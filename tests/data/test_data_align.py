"""Alignment: Umeyama similarity, cv2-style warping, 5-point crop."""

from __future__ import annotations

import numpy as np
import pytest

from cdface.data.align import (
    ARCFACE_TEMPLATE,
    align_face,
    estimate_similarity,
    resize_bilinear,
    transform_points,
    warp_affine,
)
from cdface.errors import FormatError


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


@pytest.mark.parametrize("angle,scale,tx,ty", [(0.0, 1.0, 0, 0), (0.4, 2.3, 40, -10), (-1.2, 0.6, 5, 90)])
def test_landmarks_moved_by_similarity_map_back(angle, scale, tx, ty):
    known = _similarity(angle, scale, tx, ty)
    landmarks = transform_points(ARCFACE_TEMPLATE, known)
    estimated = estimate_similarity(landmarks, ARCFACE_TEMPLATE)
    assert np.abs(transform_points(landmarks, estimated) - ARCFACE_TEMPLATE).max() < 0.5
    np.testing.assert_allclose(estimated, np.linalg.inv(np.vstack([known, [0, 0, 1]]))[:2], atol=1e-9)


def test_noisy_landmarks_least_squares():
    rng = np.random.default_rng(0)
    landmarks = transform_points(ARCFACE_TEMPLATE, _similarity(0.2, 1.5, 10, 20)) + rng.normal(0, 1.0, (5, 2))
    est = estimate_similarity(landmarks, ARCFACE_TEMPLATE)
    assert np.isclose(est[0, 0], est[1, 1]) and np.isclose(est[0, 1], -est[1, 0])  # a similarity

    def cost(a: float, b: float, tx: float, ty: float) -> float:
        matrix = np.array([[a, -b, tx], [b, a, ty]])
        return float(((transform_points(landmarks, matrix) - ARCFACE_TEMPLATE) ** 2).sum())

    params = np.array([est[0, 0], est[1, 0], est[0, 2], est[1, 2]])
    best = cost(*params)
    for delta in np.concatenate([np.eye(4), -np.eye(4)]) * 1e-4:  # least squares: a local minimum
        assert best <= cost(*(params + delta))


def _reference_warp(image: np.ndarray, matrix: np.ndarray, w: int, h: int) -> np.ndarray:
    """Slow per-pixel bilinear sampling (cv2.warpAffine semantics, border 0)."""
    inv = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
    out = np.zeros((h, w, image.shape[2]))
    for y in range(h):
        for x in range(w):
            sx, sy, _ = inv @ [x, y, 1]
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            for dy in (0, 1):
                for dx in (0, 1):
                    xi, yi = x0 + dx, y0 + dy
                    if 0 <= xi < image.shape[1] and 0 <= yi < image.shape[0]:
                        weight = (1 - abs(sx - xi)) * (1 - abs(sy - yi))
                        out[y, x] += weight * image[yi, xi]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_warp_matches_slow_reference():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    matrix = _similarity(0.3, 1.4, -3.5, 2.25)
    np.testing.assert_array_equal(warp_affine(image, matrix, (18, 16)), _reference_warp(image, matrix, 18, 16))
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_array_equal(warp_affine(image, identity, (24, 20)), image)
    shifted = warp_affine(image, np.array([[1.0, 0, 2], [0, 1.0, 0]]), (24, 20))
    np.testing.assert_array_equal(shifted[:, 2:], image[:, :-2])
    assert (shifted[:, :2] == 0).all()


def test_align_face_puts_landmarks_on_template():
    # an image with bright dots at the landmark positions of a rotated, scaled face
    known = _similarity(0.35, 2.0, 30, 15)
    landmarks = transform_points(ARCFACE_TEMPLATE, known)
    image = np.zeros((320, 320, 3), np.uint8)
    yy, xx = np.mgrid[0:320, 0:320]
    for x, y in landmarks:
        image[(xx - x) ** 2 + (yy - y) ** 2 <= 9] = 255
    crop = align_face(image, landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    for x, y in ARCFACE_TEMPLATE:
        assert crop[int(round(y)), int(round(x))].min() > 200
    with pytest.raises(FormatError, match="NaN"):
        align_face(image, np.where(np.eye(5, 2) > 0, np.nan, landmarks))
    with pytest.raises(FormatError):
        align_face(image, np.zeros((5, 2)))


def test_resize_bilinear_constant_and_shape():
    image = np.full((50, 40, 3), 77, np.uint8)
    out = resize_bilinear(image, 112, 112)
    assert out.shape == (112, 112, 3) and (out == 77).all()


def test_collinear_landmarks_never_give_a_reflection():
    import numpy as np

    from cdface.data.align import ARCFACE_TEMPLATE, estimate_similarity

    rng = np.random.default_rng(0)
    for _ in range(300):
        start, direction = rng.normal(size=2), rng.normal(size=2)
        src = start + np.outer(rng.uniform(-1, 1, 5), direction)  # five points on one line
        matrix = estimate_similarity(src, ARCFACE_TEMPLATE)
        assert np.linalg.det(matrix[:, :2]) >= -1e-12
