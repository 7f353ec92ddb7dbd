"""Run a face detector over photo files: decode in DataLoader workers, detect in this process, keep the faces a
`FaceSelection` allows, and say which photos gave no face and which could not be read.

The result is one `FaceRow` per kept face (the photo, its 1-based number, the detected face): the rows that
`embed`/`search --detect` embed (aligning each photo again with the row's landmarks through
`inference.extract.ImageFiles`, the `--landmarks` path) and that `data pack --detect` packs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from cdface.detect.crops import FaceSelection, face_name
from cdface.detect.face import DetectedFace, FaceDetector
from cdface.errors import FormatError

__all__ = ["FaceRow", "PhotoFaces", "PhotoImages", "find_faces"]


@dataclass(frozen=True)
class FaceRow:
    """One kept face: `photo` indexes the photo list, `number` is 1-based in score order within the photo."""

    photo: int
    path: str
    number: int
    face: DetectedFace

    @property
    def name(self) -> str:
        return face_name(self.path, self.number, self.face)

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "face": self.number} | self.face.to_json()


@dataclass
class PhotoFaces:
    """Faces kept over a list of photos. `no_face`: '<photo>: <reason>' for photos without a kept face;
    `errors`: messages of photos that could not be read; `found`: faces the detector returned in all."""

    rows: list[FaceRow]
    photos: int
    no_face: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    found: int = 0
    seconds: float = 0.0

    @property
    def landmarks(self) -> np.ndarray:
        """(R, 5, 2) float32 landmarks of the rows (the detector's dtype, which the crop estimate keeps)."""
        if not self.rows:
            return np.zeros((0, 5, 2), np.float32)
        return np.stack([np.asarray(r.face.landmarks, dtype=np.float32) for r in self.rows])

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.rows]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rows]


class PhotoImages(Dataset):
    """Photo files decoded to (H, W, 3) uint8 RGB (EXIF orientation applied); an unreadable file yields its
    error message instead of an image. Items: (index, image or None, message or None)."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        from cdface.data.decode import decode_image

        path = self.paths[index]
        try:
            with open(path, "rb") as handle:
                return index, decode_image(handle.read(), path), None
        except FormatError as exc:
            return index, None, str(exc)
        except OSError as exc:
            return index, None, f"{path}: {exc.strerror or exc}"


def _first(items: list) -> tuple:
    return items[0]


def find_faces(
    detector: FaceDetector,
    paths: Sequence[str | Path],
    selection: FaceSelection | None = None,
    workers: int = 0,
    progress: bool = False,
) -> PhotoFaces:
    """Detect faces on every photo of `paths`; keep those `selection` allows (default: all).

    A photo without a kept face is listed in `no_face` with the reason (none found, or how many the filters
    dropped); an unreadable photo in `errors`. Neither stops the run.
    """
    from tqdm import tqdm

    selection = selection or FaceSelection()
    loader = DataLoader(PhotoImages(paths), batch_size=1, shuffle=False, num_workers=workers, collate_fn=_first)
    result = PhotoFaces(rows=[], photos=len(paths))
    name = getattr(detector, "name", type(detector).__name__)
    start = time.perf_counter()
    with tqdm(total=len(paths), unit="photo", desc="detect", disable=not progress, file=sys.stderr,
              dynamic_ncols=True) as bar:
        for index, image, error in loader:
            bar.update(1)
            path = str(paths[index])
            if image is None:
                result.errors.append(error or f"{path}: unreadable")
                continue
            faces = detector.detect(image)
            result.found += len(faces)
            kept = selection.apply(faces)
            if not kept:
                why = (f"no face found ({name})" if not faces else
                       f"{len(faces)} face(s) found, none with {selection.describe()}")
                result.no_face.append(f"{path}: {why}")
                continue
            result.rows.extend(FaceRow(index, path, k, face) for k, face in enumerate(kept, 1))
    result.seconds = time.perf_counter() - start
    return result
