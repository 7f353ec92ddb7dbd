"""Photos with known faces and a fake detector that finds them, for the `--detect` tests (no real detector).

A photo is identity-coloured aligned crops (`inference_mock_data.face`) placed on a canvas of another colour
(rotated, scaled), with their five landmarks transformed along; `FakeDetector` answers each photo (recognised
by its size, which every test photo has its own of) with those faces. With `MeanColor` as the model, a row's
embedding tells which identity's crop was aligned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from inference_mock_data import DISTRACTOR_COLOURS, IDENTITY_COLOURS, face, loose_crop
from PIL import Image

from cdface.detect import DetectedFace


class FakeDetector:
    """Returns the faces registered for a photo's (height, width), sorted by score; [] for other photos."""

    name = "fake"

    def __init__(self) -> None:
        self.faces: dict[tuple[int, int], list[DetectedFace]] = {}
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        self.calls += 1
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        return sorted(self.faces.get(image.shape[:2], []), key=lambda f: -f.score)


def write_photo(path: Path, identities: list[int], detector: FakeDetector, scores: list[float] | None = None,
                seed: int = 0, extra_rows: int = 0) -> list[DetectedFace]:
    """A photo of the given identities side by side (240 px canvases, `extra_rows` more rows of height to make
    the size unique), registered with `detector`; returns its faces (box around the landmarks, scaled)."""
    rng = np.random.default_rng(seed)
    tiles, faces = [], []
    for k, identity in enumerate(identities):
        crop = face(IDENTITY_COLOURS[identity], rng)
        tile, points = loose_crop(crop, DISTRACTOR_COLOURS[k % len(DISTRACTOR_COLOURS)], rng)
        points = points + np.array([240.0 * k, 0.0])
        centre, half = points.mean(axis=0), np.ptp(points, axis=0).max()
        box = np.concatenate([centre - half, centre + half]).astype(np.float32)
        score = scores[k] if scores else 0.99 - 0.01 * k
        faces.append(DetectedFace(box=box, score=float(score), landmarks=points.astype(np.float32)))
        tiles.append(tile)
    image = np.concatenate(tiles, axis=1) if tiles else np.full((240, 240, 3), 128, np.uint8)
    if extra_rows:
        image = np.concatenate([image, np.full((extra_rows, image.shape[1], 3), 128, np.uint8)])
    Image.fromarray(image).save(path)
    detector.faces[image.shape[:2]] = faces
    return faces
