"""5-point face alignment to the ArcFace template, pixel for pixel insightface's ``face_align.norm_crop``.

insightface crops a face by estimating the least-squares similarity (rotation, uniform scale, translation)
from the 5 landmarks to its ``arcface_dst`` template with ``skimage.transform.SimilarityTransform``
(Umeyama's method) and warping with ``cv2.warpAffine`` (bilinear, constant border 0). Here:

- ``estimate_similarity`` is Umeyama's estimate computed with the same numpy operations, in the same dtypes
  (float32 landmarks and template give float32 intermediates, as in scikit-image), so the 2x3 matrix has
  the same bits as ``SimilarityTransform.estimate``'s (tested against scikit-image);
- ``warp_affine`` and ``resize_bilinear`` are OpenCV's ``warpAffine`` / ``resize`` (bilinear with OpenCV's
  fixed-point weights, which a float implementation misses by up to one grey level);
- ``align_face`` = ``norm_crop``: the template scaled for the crop size as insightface's ``estimate_norm``;
  ``template="ijb"`` swaps in the IJB scripts' own copy of the template (one float32 ulp apart).

This module is the one place that holds the template and the estimate; IJB, MegaFace and ``cdface embed
--landmarks`` (through ``inference.extract.ImageFiles`` / ``FaceEmbedder.align``) all crop with it.
"""

from __future__ import annotations

import numpy as np

from cdface.errors import CdfaceError, FormatError

__all__ = [
    "ARCFACE_TEMPLATE",
    "TEMPLATES",
    "align_face",
    "crop_template",
    "estimate_similarity",
    "resize_bilinear",
    "transform_points",
    "warp_affine",
]

# insightface's `arcface_dst` (face_align.py, float32 as there): left eye, right eye, nose tip, left and right mouth
# corners, in pixel coordinates of a 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
ARCFACE_TEMPLATE.flags.writeable = False


def _ijb_template() -> np.ndarray:
    """The template of insightface's IJB scripts (``ijb_11.py``'s Embedding, arcface_torch ``eval_ijbc.py``):
    the 96x112 template in float32, shifted right by 8.0 in float32. Its right-mouth x is one float32 ulp
    below ``arcface_dst``'s (70.72989 vs 70.7299), which moves a few warped pixels per crop."""
    narrow = np.array(
        [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]],
        dtype=np.float32,
    )
    narrow[:, 0] += 8.0
    narrow.flags.writeable = False
    return narrow


# The 112x112 templates by name: "arcface" = norm_crop's (every other insightface pipeline), "ijb" = the IJB scripts'.
TEMPLATES = {"arcface": ARCFACE_TEMPLATE, "ijb": _ijb_template()}


def crop_template(size: int = 112, template: str = "arcface") -> np.ndarray:
    """(5, 2) float32 template for a ``size`` x ``size`` crop, as insightface's ``estimate_norm`` builds it.

    ``template`` names a 112x112 template of ``TEMPLATES``. A multiple of 112 scales it by size / 112; a
    multiple of 128 scales it by size / 128 and shifts x right by 8 * size / 128 (the 112 face centred in a
    128 crop). Other sizes: ``CdfaceError`` (insightface asserts the same).
    """
    if template not in TEMPLATES:
        raise CdfaceError(f"alignment template must be one of {sorted(TEMPLATES)}, got {template!r}")
    size = int(size)
    if size > 0 and size % 112 == 0:
        ratio, shift_x = size / 112.0, 0.0
    elif size > 0 and size % 128 == 0:
        ratio = size / 128.0
        shift_x = 8.0 * ratio
    else:
        raise CdfaceError(f"aligned crop size must be a multiple of 112 or 128 (insightface's template), got {size}")
    out = TEMPLATES[template] * ratio  # float32 * Python float stays float32, as in insightface
    out[:, 0] += shift_x
    return out


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) float64 similarity best mapping ``src`` (N, 2) points onto ``dst`` (N, 2) in least squares.

    Umeyama (PAMI 1991, eqs. 38-43), the estimate of ``skimage.transform.SimilarityTransform``: centre both
    point sets, SVD of their cross-covariance, a reflection only when the data demand one (never for
    rank-deficient, e.g. collinear, points), scale = trace(S D) / source variance. Intermediates keep the
    inputs' dtypes (float32 in, float32 SVD) exactly as scikit-image computes them, so the matrix is
    bit-identical to ``SimilarityTransform.estimate(src, dst).params[:2]``.

    Errors: ``ValueError`` for mismatched shapes; ``FormatError`` for non-finite or coincident points.
    """
    src = np.asarray(src)
    dst = np.asarray(dst)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"expected two (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise FormatError("landmarks", None, "finite landmark coordinates (got NaN/inf)")
    n = src.shape[0]
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    cov = dst_c.T @ src_c / n  # eq. 38
    signs = np.ones(2, dtype=np.float64)  # eq. 39: D
    if np.linalg.det(cov) < 0:
        signs[1] = -1.0
    u, sv, vt = np.linalg.svd(cov)
    # rank as numpy's matrix_rank decides it, with float64 eps (scikit-image's tolerance)
    rank = int(np.count_nonzero(sv > sv.max() * 2 * np.finfo(float).eps))
    if rank == 0:
        raise FormatError("landmarks", None, "distinct landmark points (all points coincide)")
    if rank == 1:  # eq. 43: the rotation that needs no reflection
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            rotation = u @ vt
        else:
            rotation = u @ np.diag(np.array([1.0, -1.0])) @ vt
    else:  # eq. 40
        rotation = u @ np.diag(signs) @ vt
    linear = np.asarray(rotation, dtype=np.float64)
    scale = 1.0 / src_c.var(axis=0).sum() * (sv @ signs)  # eqs. 41-42 (D of eq. 39 even in the rank-1 case)
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, 2] = dst_mean - scale * (linear @ src_mean.T)
    matrix[:, :2] = linear
    matrix[:, :2] *= scale
    return matrix


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points (float64)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ np.asarray(matrix, dtype=np.float64)[:, :2].T + matrix[:, 2]


_BORDERS = ("constant", "replicate")


def warp_affine(
    image: np.ndarray,
    matrix: np.ndarray,
    size: int | tuple[int, int],
    border: str = "constant",
) -> np.ndarray:
    """``cv2.warpAffine``: warp ``image`` (H, W[, C]) by the 2x3 ``matrix`` (source -> destination pixel
    coordinates) into ``size`` = (w, h) or a square side; bilinear; outside the source is 0 (``"constant"``)
    or the nearest edge pixel (``"replicate"``). Returns the input's dtype and channel layout."""
    if border not in _BORDERS:
        raise ValueError(f"border must be 'constant' or 'replicate', got {border!r}")
    out_w, out_h = (size, size) if isinstance(size, (int, np.integer)) else size
    import cv2  # on first use: reading RecordIO or .bin files through cdface.data does not load OpenCV

    img = np.ascontiguousarray(image)
    mode = cv2.BORDER_CONSTANT if border == "constant" else cv2.BORDER_REPLICATE
    out = cv2.warpAffine(img, np.asarray(matrix, dtype=np.float64), (int(out_w), int(out_h)),
                         flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=0.0)
    return out.reshape(int(out_h), int(out_w), *img.shape[2:])  # OpenCV drops a trailing 1-channel axis


def resize_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``cv2.resize(INTER_LINEAR)``: half-pixel centres, edge pixels replicated, no antialiasing."""
    import cv2

    img = np.ascontiguousarray(image)
    out = cv2.resize(img, (int(out_w), int(out_h)), interpolation=cv2.INTER_LINEAR)
    return out.reshape(int(out_h), int(out_w), *img.shape[2:])


def fit_to_size(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """The image at ``size`` ((h, w) or a square side): unchanged when it already is, else resized bilinearly."""
    out_h, out_w = (size, size) if isinstance(size, (int, np.integer)) else size
    if image.shape[0] == out_h and image.shape[1] == out_w:
        return image
    return resize_bilinear(image, int(out_h), int(out_w))


def align_face(image: np.ndarray, landmarks5: np.ndarray, size: int = 112, template: str = "arcface") -> np.ndarray:
    """insightface's ``norm_crop(image, landmarks5, image_size=size)``: (size, size, C) crop of ``image``
    (H, W, C), usually uint8, by the similarity from the 5 landmarks (x, y pixel coordinates: left eye, right
    eye, nose, left and right mouth corners) to ``crop_template(size, template)``; outside the image is 0.
    ``template="ijb"`` gives the crops of insightface's IJB scripts instead (same estimate and warp).

    The landmarks' float dtype is kept (insightface's detectors and IJB's 5pts reader give float32, which
    makes the estimate run in float32); other dtypes are read as float64.
    Errors: ``FormatError`` for a wrong shape, NaN/inf or coincident landmarks; ``CdfaceError`` for a size
    that is not a multiple of 112 or 128.
    """
    landmarks = np.asarray(landmarks5)
    if landmarks.dtype not in (np.float32, np.float64):
        landmarks = landmarks.astype(np.float64)
    if landmarks.shape != (5, 2):
        raise FormatError("landmarks", None, f"5 (x, y) landmarks, got shape {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise FormatError("landmarks", None, "finite landmark coordinates (got NaN/inf)")
    matrix = estimate_similarity(landmarks, crop_template(size, template))
    return warp_affine(image, matrix, size)
