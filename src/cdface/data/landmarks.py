"""Landmark files: one '<image> <numbers>' line per image (IJB, MegaFace, `cdface embed --landmarks`).

The numbers of a line (read from its end, so an image path may hold spaces) are one of:

- 10 or 11: five points ``x1 y1 ... x5 y5`` and an optional detector score, in the ArcFace template's order
  (the eye on the image's left, the eye on its right, the nose tip, the mouth corner on the image's left,
  the one on its right). MTCNN's own output order, ``x1 x2 x3 x4 x5 y1 y2 y3 y4 y5``, is recognised by
  geometry: when the points read as pairs do not fit a face (`fit_residual` above `RESIDUAL_BOUND`) and the
  same numbers read in MTCNN's order do, they are read in MTCNN's order (a note names the line); when both
  fit, the line is refused as ambiguous.
- 136 or 137: 68 points ``x1 y1 ... x68 y68`` in the iBUG 300-W order (dlib, face_alignment) and an optional
  score, reduced to the five points as FFHQ's alignment script does (NVlabs/ffhq-dataset,
  ``download_ffhq.py``, ``recreate_aligned_images``): each eye centre is the mean of its six points
  (36-41, 42-47, 0-based), the mouth corners are points 48 and 54; the nose tip is point 30 (the iBUG
  definition of the 68 points, which FFHQ's crop does not use).

Every line's five points are fitted to the ArcFace template by the similarity `align_face` uses; a fit whose
largest point error exceeds `RESIDUAL_BOUND` eye distances is reported as a warning naming the image and line
(a wrong point order, swapped eyes, or a face turned far from frontal).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdface.errors import FormatError
from cdface.files import TEXT_ENCODING

__all__ = [
    "RESIDUAL_BOUND", "LandmarkLine", "fit_residual", "fit_residuals", "reduce_68_to_5", "parse_landmark_numbers",
    "read_landmark_file",
]

# Largest point error of the similarity fit to the ArcFace template, in template eye distances (35.2 px of a
# 112 crop). Measured with a rigid 5-point head model: 0.19 at 30 degrees of yaw, 0.27 at 45, 0.33 at 60; 3 px
# of landmark noise per point in crop units gives 0.21 at its 99th percentile; MTCNN-ordered numbers read as
# pairs give 0.65-0.73 and left/right-swapped points 0.62.
RESIDUAL_BOUND = 0.35

_FIVE = (10, 11)  # x1 y1 ... x5 y5 [score]
_SIXTY_EIGHT = (136, 137)  # x1 y1 ... x68 y68 [score]


@dataclass(frozen=True)
class LandmarkLine:
    """One line's five points (5, 2) float64 (image pixels, template order), how its numbers were laid out
    ("5-point", "5-point MTCNN order" or "68-point") and the fit residual (template eye distances)."""

    points: np.ndarray
    layout: str
    residual: float


def reduce_68_to_5(points68: np.ndarray) -> np.ndarray:
    """(68, 2) or (N, 68, 2) iBUG-order points -> (5, 2) or (N, 5, 2): eye centres (mean of 36-41 and of
    42-47), nose tip 30, mouth corners 48 and 54 (0-based; FFHQ's alignment for the eyes and mouth, see the
    module docstring)."""
    p = np.asarray(points68, dtype=np.float64)
    if p.shape[-2:] != (68, 2):
        raise ValueError(f"expected (..., 68, 2) points, got {p.shape}")
    return np.stack([p[..., 36:42, :].mean(axis=-2), p[..., 42:48, :].mean(axis=-2), p[..., 30, :], p[..., 48, :],
                     p[..., 54, :]], axis=-2)


def fit_residuals(points5: np.ndarray) -> np.ndarray:
    """(N,) largest distance between the ArcFace template and each set of 5 points (N, 5, 2) mapped onto it by
    the least-squares similarity, divided by the template's eye distance; inf for coincident or non-finite
    points; 0 for a rotated, scaled, shifted template.

    The similarity is Umeyama's estimate (`align.estimate_similarity`, what `align_face` uses), which in 2-D
    with a proper rotation is the complex least squares  min |a z + b - t|²  over complex a, b (z, t: the
    points and the template as x + iy); written that way it is a few array operations for any N.
    """
    from cdface.data.align import ARCFACE_TEMPLATE

    template = ARCFACE_TEMPLATE.astype(np.float64)
    t = template[:, 0] + 1j * template[:, 1]
    p = np.asarray(points5, dtype=np.float64).reshape(-1, 5, 2)
    z = p[..., 0] + 1j * p[..., 1]
    zc = z - z.mean(axis=1, keepdims=True)
    tc = t - t.mean()
    spread = np.einsum("ij,ij->i", zc.real, zc.real) + np.einsum("ij,ij->i", zc.imag, zc.imag)
    ok = np.isfinite(spread) & (spread > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (np.conj(zc) * tc).sum(axis=1) / spread
        error = np.abs(a[:, None] * zc + t.mean() - t).max(axis=1)
    out = error / np.linalg.norm(template[1] - template[0])
    out[~ok] = np.inf
    return out


def fit_residual(points5: np.ndarray) -> float:
    """`fit_residuals` of one (5, 2) point set."""
    return float(fit_residuals(np.asarray(points5)[None])[0])


def _resolve(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 10 or 136) coordinates -> (points (N, 5, 2), layout code (N,): 0 pairs, 1 MTCNN order, 2 68-point,
    3 ambiguous; residual (N,)), all lines at once."""
    n = coords.shape[0]
    if coords.shape[1] == 136:
        points = reduce_68_to_5(coords.reshape(n, 68, 2))
        return points, np.full(n, 2), fit_residuals(points)
    pairs = coords.reshape(n, 5, 2)
    mtcnn = coords.reshape(n, 2, 5).transpose(0, 2, 1)  # x1..x5 then y1..y5
    r_pairs, r_mtcnn = fit_residuals(pairs), fit_residuals(mtcnn)
    use_mtcnn = (r_pairs > RESIDUAL_BOUND) & (r_mtcnn <= RESIDUAL_BOUND)
    layout = np.where(use_mtcnn, 1, np.where((r_pairs <= RESIDUAL_BOUND) & (r_mtcnn <= RESIDUAL_BOUND), 3, 0))
    return np.where(use_mtcnn[:, None, None], mtcnn, pairs), layout, np.where(use_mtcnn, r_mtcnn, r_pairs)


_LAYOUTS = ("5-point", "5-point MTCNN order", "68-point")
_AMBIGUOUS = ("10 numbers that fit a face in one order only; they fit both as x1 y1 ... x5 y5 and as MTCNN's "
              "x1..x5 y1..y5: write them as x1 y1 ... x5 y5")


def _coords(values: np.ndarray, path: str | Path, where: str) -> np.ndarray:
    """The coordinates of one line's numbers (the score dropped); FormatError for another count."""
    if values.size in _SIXTY_EIGHT:
        return values[:136]
    if values.size in _FIVE:
        return values[:10]
    raise FormatError(path, where, "x1 y1 ... x5 y5 [score] (10 or 11 numbers) or 68 points x1 y1 ... x68 y68 "
                      f"[score] (136 or 137 numbers) after the image, got {values.size} numbers")


def parse_landmark_numbers(values: np.ndarray, path: str | Path, where: str) -> LandmarkLine:
    """The five points of one line's trailing numbers (10/11: five points [+ score], in pairs or in MTCNN's
    order; 136/137: 68 points [+ score]). FormatError (naming `path` and `where`) for another count, non-finite
    values, or numbers that fit a face in both 5-point orders."""
    coords = _coords(np.asarray(values, dtype=np.float64).reshape(-1), path, where)
    if not np.isfinite(coords).all():
        raise FormatError(path, where, "finite landmark coordinates")
    points, layout, residual = _resolve(coords[None])
    if layout[0] == 3:
        raise FormatError(path, where, _AMBIGUOUS)
    return LandmarkLine(points[0], _LAYOUTS[int(layout[0])], float(residual[0]))


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _trailing_numbers(tokens: list[str]) -> int:
    """How many of the last tokens are numbers (the first token is always part of the image path)."""
    count = 0
    for token in reversed(tokens[1:]):
        if not _number(token):
            break
        count += 1
    return count


def _stderr_warning(message: str) -> None:
    print(f"cdface: warning: {message}", file=sys.stderr)


def read_landmark_file(path: str | Path, on_warning: Callable[[str], None] | None = _stderr_warning,
                       several: bool = False) -> dict[str, np.ndarray]:
    """{image: (5, 2) float64} in the ArcFace template's order; malformed lines and non-finite coordinates
    name the file and line (FormatError).

    ``several``: an image may have several lines (several faces in one photo): {image: (F, 5, 2) float64}, one
    face per distinct line in file order (a repeated identical line is one face). Without it, an image listed
    again with other points is a FormatError.

    The numbers are read from the end of the line, so an image path may hold spaces (``my photos/a.jpg x1 ...``),
    as in image lists. Lines read in MTCNN's order, and lines whose points fit the template poorly (see
    `parse_landmark_numbers`, `RESIDUAL_BOUND`), are reported through `on_warning` (default: stderr; None: quiet),
    the first ten one by one, then a count.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding=TEXT_ENCODING)
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(path, None, f"a readable UTF-8 landmark file ({exc})") from exc
    rows: list[tuple[str, int, np.ndarray]] = []  # (image, line number, coordinates)
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        tokens = stripped.split()
        count = _trailing_numbers(tokens)
        if count < 10:
            if len(tokens) >= 11:
                raise FormatError(path, f"line {number}", "10 numeric landmark coordinates (x1 y1 ... x5 y5) after "
                                  "the image")
            raise FormatError(path, f"line {number}", f"'image x1 y1 ... x5 y5 [score]', got {len(tokens)} fields")
        fields = stripped.rsplit(None, count)
        rows.append((fields[0], number, _coords(np.array(fields[1:], dtype=np.float64), path, f"line {number}")))
    points = np.zeros((len(rows), 5, 2))
    layout = np.zeros(len(rows), np.int64)
    residual = np.zeros(len(rows))
    for width in (10, 136):  # every line of a kind at once
        idx = np.array([i for i, row in enumerate(rows) if row[2].size == width], dtype=np.int64)
        if idx.size == 0:
            continue
        coords = np.stack([rows[i][2] for i in idx])
        bad = ~np.isfinite(coords).all(axis=1)
        if bad.any():
            raise FormatError(path, f"line {rows[idx[np.argmax(bad)]][1]}", "finite landmark coordinates")
        points[idx], layout[idx], residual[idx] = _resolve(coords)
    if (layout == 3).any():
        raise FormatError(path, f"line {rows[int(np.argmax(layout == 3))][1]}", _AMBIGUOUS)
    notes: list[str] = []
    for i in np.flatnonzero((layout == 1) | (residual > RESIDUAL_BOUND)):  # the flagged lines only
        name, number = rows[i][0], rows[i][1]
        if layout[i] == 1:
            notes.append(f"{path}, line {number} ({name}): read in MTCNN's x1..x5 y1..y5 order (as x1 y1 ... x5 y5 "
                         "the points do not fit a face)")
        else:
            notes.append(f"{path}, line {number} ({name}): the {_LAYOUTS[int(layout[i])]} landmarks fit the ArcFace "
                         f"template poorly (largest point error {residual[i]:.2f} eye distances > {RESIDUAL_BOUND}): "
                         "check the point order (left eye, right eye, nose, left and right mouth corners as seen "
                         "in the image)")
    table: dict[str, np.ndarray] = {}
    for i, (name, number, _) in enumerate(rows):
        if several:
            faces = table.get(name)
            if faces is None:
                table[name] = points[i][None]
            elif not (faces == points[i]).all(axis=(1, 2)).any():
                table[name] = np.concatenate([faces, points[i][None]])
            continue
        if name in table and not np.array_equal(table[name], points[i]):  # which one is right?
            raise FormatError(path, f"line {number}", f"one landmark line per image; {name} is listed again "
                              "with other points")
        table[name] = points[i]
    if notes and on_warning is not None:
        for note in notes[:10]:
            on_warning(note)
        if len(notes) > 10:
            on_warning(f"{path}: {len(notes) - 10} more landmark lines like these")
    return table
