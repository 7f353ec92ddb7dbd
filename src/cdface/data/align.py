"""5-point face alignment to the ArcFace 112x112 template, without OpenCV or scikit-image.

``estimate_similarity`` is Umeyama's least-squares similarity (what ``skimage.transform.SimilarityTransform
.estimate`` computes and insightface's ``norm_crop`` uses); ``warp_affine`` has ``cv2.warpAffine``
semantics (M maps source to destination pixel coordinates, integer coordinates are pixel centres,
bilinear, constant border 0).
"""

from __future__ import annotations

import numpy as np

from cdface.errors import FormatError

__all__ = [
    "ARCFACE_TEMPLATE",
    "align_face",
    "estimate_similarity",
    "resize_bilinear",
    "transform_points",
    "warp_affine",
]

# insightface's `arcface_dst`: left eye, right eye, nose tip, left and right mouth corners, in a 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) best mapping ``src`` points onto ``dst``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"expected two (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise FormatError("landmarks", None, "finite landmark coordinates (got NaN/inf)")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12:
        raise FormatError("landmarks", None, "distinct landmark points (all points coincide)")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    if np.linalg.matrix_rank(cov) == 1:  # collinear points: Umeyama's rank-deficient case, never a reflection
        d = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) > 0 else -1.0])
        rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    linear = np.asarray(matrix[:, :2], dtype=np.float64)
    inv = np.linalg.inv(linear)
    return np.concatenate([inv, -inv @ matrix[:, 2:3]], axis=1)


def warp_affine(
    image: np.ndarray,
    matrix: np.ndarray,
    size: int | tuple[int, int],
    border: str = "constant",
) -> np.ndarray:
    """Warp ``image`` (H, W[, C]) by the 2x3 ``matrix`` (source -> destination) into ``size`` = (w, h).

    Bilinear sampling of all output pixels at once; outside the source counts as 0 (``border="constant"``)
    or the nearest edge pixel (``"replicate"``). uint8 input is rounded back to uint8.
    """
    out_w, out_h = (size, size) if isinstance(size, (int, np.integer)) else size
    img = np.asarray(image)
    squeeze = img.ndim == 2
    src = img[:, :, None] if squeeze else img
    h, w = src.shape[:2]
    inv = invert_affine(np.asarray(matrix, dtype=np.float64))
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    if border == "replicate":
        sx = np.clip(sx, 0, w - 1)
        sy = np.clip(sy, 0, h - 1)
    elif border != "constant":
        raise ValueError(f"border must be 'constant' or 'replicate', got {border!r}")
    x0 = np.floor(sx).astype(np.int64)
    y0 = np.floor(sy).astype(np.int64)
    fx = (sx - x0)[..., None]
    fy = (sy - y0)[..., None]
    values = src.astype(np.float32)
    out = np.zeros((out_h, out_w, src.shape[2]), dtype=np.float64)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            pixels = values[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            out += np.where(valid[..., None], pixels, 0.0) * (wx * wy)
    if img.dtype == np.uint8:
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    else:
        out = out.astype(img.dtype if np.issubdtype(img.dtype, np.floating) else np.float32)
    return out[:, :, 0] if squeeze else out


def resize_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres (``cv2.resize(INTER_LINEAR)`` geometry, no antialiasing)."""
    h, w = image.shape[:2]
    ax, ay = out_w / w, out_h / h
    matrix = np.array([[ax, 0.0, 0.5 * ax - 0.5], [0.0, ay, 0.5 * ay - 0.5]])
    return warp_affine(image, matrix, (out_w, out_h), border="replicate")


def fit_to_size(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """The image at ``size`` ((h, w) or a square side): unchanged when it already is, else resized bilinearly."""
    out_h, out_w = (size, size) if isinstance(size, (int, np.integer)) else size
    if image.shape[0] == out_h and image.shape[1] == out_w:
        return image
    return resize_bilinear(image, int(out_h), int(out_w))


def align_face(image: np.ndarray, landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """Crop an aligned ``size`` x ``size`` face: similarity from the 5 landmarks to the ArcFace template."""
    landmarks = np.asarray(landmarks5, dtype=np.float64)
    if landmarks.shape != (5, 2):
        raise FormatError("landmarks", None, f"5 (x, y) landmarks, got shape {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise FormatError("landmarks", None, "finite landmark coordinates (got NaN/inf)")
    matrix = estimate_similarity(landmarks, ARCFACE_TEMPLATE * (size / 112.0))
    return warp_affine(image, matrix, size)
