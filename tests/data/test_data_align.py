"""Alignment: pixel for pixel insightface's norm_crop (scikit-image SimilarityTransform + cv2.warpAffine)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cdface.data.align import (
    ARCFACE_TEMPLATE,
    align_face,
    crop_template,
    estimate_similarity,
    resize_bilinear,
    transform_points,
    warp_affine,
)
from cdface.errors import CdfaceError, FormatError

# insightface face_align.py's arcface_dst, written out here so that the reference does not read cdface's copy
_ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def _skimage_params(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 matrix of scikit-image's SimilarityTransform estimated from src to dst (insightface's call)."""
    transform = pytest.importorskip("skimage.transform")
    if hasattr(transform.SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        return transform.SimilarityTransform.from_estimate(src, dst).params
    tform = transform.SimilarityTransform()
    tform.estimate(src, dst)
    return tform.params


def _norm_crop(img: np.ndarray, landmark: np.ndarray, image_size: int = 112) -> np.ndarray:
    """insightface's face_align.norm_crop: estimate_norm (template ratio and x shift) + cv2.warpAffine."""
    if image_size % 112 == 0:
        ratio, diff_x = float(image_size) / 112.0, 0.0
    else:
        ratio = float(image_size) / 128.0
        diff_x = 8.0 * ratio
    dst = _ARCFACE_DST * ratio
    dst[:, 0] += diff_x
    matrix = _skimage_params(landmark, dst)[0:2, :]
    return cv2.warpAffine(img, matrix, (image_size, image_size), borderValue=0.0)


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _random_face(rng: np.random.Generator, h: int, w: int, dtype: type) -> np.ndarray:
    """5 landmarks of a face rotated by any angle, scaled 0.3-3x, anywhere in (or partly off) an h x w image."""
    known = _similarity(rng.uniform(-np.pi, np.pi), rng.uniform(0.3, 3.0), rng.uniform(-60, w), rng.uniform(-60, h))
    return (transform_points(_ARCFACE_DST, known) + rng.normal(0, 2.0, (5, 2))).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_align_face_equals_norm_crop_pixel_for_pixel(dtype):
    pytest.importorskip("skimage")
    rng = np.random.default_rng(0 if dtype is np.float32 else 1)
    for trial in range(120):
        h, w = (int(v) for v in rng.integers(30, 260, 2))  # non-square, some smaller than the crop
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        landmarks = _random_face(rng, h, w, dtype)
        size = (112, 224, 128, 256)[trial % 4]
        np.testing.assert_array_equal(align_face(image, landmarks, size=size), _norm_crop(image, landmarks, size))


def test_align_face_equals_norm_crop_at_the_border_and_upside_down():
    pytest.importorskip("skimage")
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (90, 170, 3), dtype=np.uint8)
    corner = _ARCFACE_DST - _ARCFACE_DST.mean(0)
    cases = [
        corner + [0, 0],  # centred on the top-left corner: three quarters of the crop is border
        corner + [170, 90],  # bottom-right corner
        corner * [1, -1] + [85, 45],  # upside down (a reflection: Umeyama's D = diag(1, -1) case)
        corner @ np.array([[0, 1], [-1, 0]]) + [20, 45],  # 90 degrees, at the left edge
        corner * 0.25 + [85, 45],  # tiny face: the crop magnifies 4x
        corner * 4 + [85, 45],  # face larger than the image
    ]
    for landmarks in cases:
        for dtype in (np.float32, np.float64):
            lmk = np.asarray(landmarks, dtype=dtype)
            got = align_face(image, lmk)
            np.testing.assert_array_equal(got, _norm_crop(image, lmk))
    assert (align_face(image, corner.astype(np.float32))[:40, :40] == 0).all()  # outside the image: 0


def test_estimate_is_scikit_image_bit_for_bit():
    pytest.importorskip("skimage")
    rng = np.random.default_rng(3)
    for trial in range(400):
        dtype = (np.float32, np.float64)[trial % 2]
        src = _random_face(rng, 200, 300, dtype)
        if trial % 5 == 0:  # collinear (rank-deficient) landmarks
            src = (rng.normal(size=2) + np.outer(rng.uniform(-50, 50, 5), rng.normal(size=2))).astype(dtype)
        if trial % 7 == 0:  # a mirrored face: the estimate may not reflect
            src = src * np.array([-1, 1], dtype=dtype)
        dst = crop_template((112, 128)[trial % 2])
        np.testing.assert_array_equal(estimate_similarity(src, dst), _skimage_params(src, dst)[:2])


def _float_warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Bilinear warp with float weights, border 0: the hand-written warp cdface had before OpenCV."""
    inv = cv2.invertAffineTransform(matrix)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx, sy = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2], inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    out = np.zeros((size, size, image.shape[2]))
    for xi, yi, weight in ((x0, y0, (1 - (sx - x0)) * (1 - (sy - y0))), (x0 + 1, y0, (sx - x0) * (1 - (sy - y0))),
                           (x0, y0 + 1, (1 - (sx - x0)) * (sy - y0)), (x0 + 1, y0 + 1, (sx - x0) * (sy - y0))):
        valid = (xi >= 0) & (xi < image.shape[1]) & (yi >= 0) & (yi < image.shape[0])
        pixels = image[np.clip(yi, 0, image.shape[0] - 1), np.clip(xi, 0, image.shape[1] - 1)]
        out += np.where(valid[..., None], pixels, 0) * weight[..., None]
    return np.rint(out).astype(np.uint8)


def test_a_float_warp_misses_norm_crop_by_one_grey_level():
    """Why OpenCV: a float bilinear warp (cdface's previous one) is not norm_crop; this test's comparison sees it."""
    rng = np.random.default_rng(4)
    diffs = []
    for _ in range(30):
        image = rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)
        matrix = estimate_similarity(_random_face(rng, 80, 90, np.float32), crop_template(112))
        diffs.append(np.abs(_float_warp(image, matrix, 112).astype(int) - warp_affine(image, matrix, 112)))
    diffs = np.concatenate([d.ravel() for d in diffs])
    assert diffs.max() == 1 and np.count_nonzero(diffs) > 0  # OpenCV's fixed-point weights


def test_warp_affine_semantics():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_array_equal(warp_affine(image, identity, (24, 20)), image)
    shifted = warp_affine(image, np.array([[1.0, 0, 2], [0, 1.0, 0]]), (24, 20))
    np.testing.assert_array_equal(shifted[:, 2:], image[:, :-2])
    assert (shifted[:, :2] == 0).all()
    replicated = warp_affine(image, np.array([[1.0, 0, 2], [0, 1.0, 0]]), (24, 20), border="replicate")
    np.testing.assert_array_equal(replicated[:, 0], image[:, 0])
    gray = image[:, :, :1]
    assert warp_affine(gray, identity, (24, 20)).shape == (20, 24, 1)
    assert warp_affine(image[:, :, 0], identity, 12).shape == (12, 12)
    with pytest.raises(ValueError, match="border"):
        warp_affine(image, identity, 12, border="wrap")


@pytest.mark.parametrize("angle,scale,tx,ty", [(0.0, 1.0, 0, 0), (0.4, 2.3, 40, -10), (-1.2, 0.6, 5, 90)])
def test_landmarks_moved_by_similarity_map_back(angle, scale, tx, ty):
    known = _similarity(angle, scale, tx, ty)
    template = ARCFACE_TEMPLATE.astype(np.float64)
    landmarks = transform_points(template, known)
    estimated = estimate_similarity(landmarks, template)
    np.testing.assert_allclose(estimated, np.linalg.inv(np.vstack([known, [0, 0, 1]]))[:2], atol=1e-9)


def test_noisy_landmarks_least_squares():
    rng = np.random.default_rng(0)
    template = ARCFACE_TEMPLATE.astype(np.float64)
    landmarks = transform_points(template, _similarity(0.2, 1.5, 10, 20)) + rng.normal(0, 1.0, (5, 2))
    est = estimate_similarity(landmarks, template)
    assert np.isclose(est[0, 0], est[1, 1]) and np.isclose(est[0, 1], -est[1, 0])  # a similarity

    def cost(a: float, b: float, tx: float, ty: float) -> float:
        matrix = np.array([[a, -b, tx], [b, a, ty]])
        return float(((transform_points(landmarks, matrix) - template) ** 2).sum())

    params = np.array([est[0, 0], est[1, 0], est[0, 2], est[1, 2]])
    best = cost(*params)
    for delta in np.concatenate([np.eye(4), -np.eye(4)]) * 1e-4:  # least squares: a local minimum
        assert best <= cost(*(params + delta))


def test_collinear_landmarks_never_give_a_reflection():
    rng = np.random.default_rng(0)
    for _ in range(300):
        start, direction = rng.normal(size=2), rng.normal(size=2)
        src = start + np.outer(rng.uniform(-1, 1, 5), direction)  # five points on one line
        matrix = estimate_similarity(src, ARCFACE_TEMPLATE)
        assert np.linalg.det(matrix[:, :2]) >= -1e-12


def test_align_face_puts_landmarks_on_template_and_refuses_bad_landmarks():
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
    with pytest.raises(FormatError, match="coincide"):
        align_face(image, np.zeros((5, 2)))
    with pytest.raises(FormatError, match="shape"):
        align_face(image, np.zeros((4, 2)))


def test_crop_template_sizes():
    np.testing.assert_array_equal(crop_template(112), ARCFACE_TEMPLATE)
    np.testing.assert_array_equal(crop_template(224), ARCFACE_TEMPLATE * np.float32(2))
    expected_128 = ARCFACE_TEMPLATE.copy()
    expected_128[:, 0] += 8  # the 112 face centred in a 128 crop
    np.testing.assert_array_equal(crop_template(128), expected_128)
    assert crop_template(112).dtype == np.float32
    for bad in (96, 0, 150):
        with pytest.raises(CdfaceError, match="112 or 128"):
            crop_template(bad)


def test_resize_bilinear_is_opencv_resize():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_bilinear(image, 112, 96), cv2.resize(image, (96, 112)))
    flat = np.full((50, 40, 3), 77, np.uint8)
    assert (resize_bilinear(flat, 112, 112) == 77).all()
    assert resize_bilinear(image[:, :, :1], 20, 30).shape == (20, 30, 1)


def test_ijb_template_gives_the_ijb_scripts_crops():
    """insightface's IJB scripts (ijb_11.py's Embedding, arcface_torch eval_ijbc.py) keep their own float32 copy
    of the template, one ulp off arcface_dst; template="ijb" reproduces their crops, which norm_crop's miss."""
    pytest.importorskip("skimage")
    src = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655],
                    [62.7299, 92.2041]], dtype=np.float32)
    src[:, 0] += 8.0
    assert np.count_nonzero(src != _ARCFACE_DST) == 1
    rng = np.random.default_rng(6)
    differs = 0
    for _ in range(20):
        image = rng.integers(0, 256, (150, 130, 3), dtype=np.uint8)
        lmk = _random_face(rng, 150, 130, np.float32)
        ijb = cv2.warpAffine(image, _skimage_params(lmk, src)[0:2, :], (112, 112), borderValue=0.0)
        np.testing.assert_array_equal(align_face(image, lmk, template="ijb"), ijb)
        differs += not np.array_equal(align_face(image, lmk), ijb)
    assert differs > 0
    with pytest.raises(CdfaceError, match="template"):
        align_face(image, lmk, template="mtcnn")
