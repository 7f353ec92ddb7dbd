"""Training data from raw photos (`cdface data pack --detect`): an image folder ``root/<identity>/<photo>``
becomes an insightface RecordIO of aligned 112x112 crops, one per photo (its largest face) or one per face.

Faces are found by any `FaceDetector` (`cdface.detect.photos.find_faces`) and cropped with their five points
by `align_face` (insightface's `norm_crop`), the crops the field's training sets hold. Photos without a face
and unreadable photos are skipped and listed, never packed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cdface.data.align import align_face
from cdface.data.datasets import ImageFolderDataset, contiguous_labels
from cdface.data.decode import decode_image, encode_jpeg
from cdface.data.recordio_writer import write_insightface_rec
from cdface.detect.crops import FaceSelection
from cdface.detect.face import FaceDetector
from cdface.detect.photos import FaceRow, find_faces

__all__ = ["PackSummary", "largest_per_photo", "pack_photo_folder"]


@dataclass
class PackSummary:
    """What `pack_photo_folder` wrote: `faces` crops of `classes` identities from `photos_with_face` of
    `photos` photos; `skipped` lists '<photo>: reason' (no face, unreadable), also in `skipped_file`."""

    rec: Path
    faces: int
    classes: int
    photos: int
    photos_with_face: int
    skipped: list[str] = field(default_factory=list)
    skipped_file: Path | None = None
    empty_classes: list[str] = field(default_factory=list)
    scan_note: str = ""


def largest_per_photo(rows: list[FaceRow]) -> list[FaceRow]:
    """Of each photo's rows, the one with the largest box (the higher-scored of equal ones), in photo order."""
    if not rows:
        return []
    photo = np.array([r.photo for r in rows], dtype=np.int64)
    boxes = np.stack([np.asarray(r.face.box, dtype=np.float64) for r in rows])
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    order = np.lexsort((np.arange(len(rows)), -area, photo))  # by photo, then area descending, then score order
    _, first = np.unique(photo[order], return_index=True)
    return [rows[int(i)] for i in order[first]]


def pack_photo_folder(
    detector: FaceDetector,
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    selection: FaceSelection | None = None,
    all_faces: bool = False,
    size: int = 112,
    quality: int = 95,
    workers: int = 0,
    progress: bool = False,
) -> PackSummary:
    """Detect, align and pack the photos of ``folder/<identity>/...`` into ``out_dir/train.rec`` (+ .idx,
    property), labels in sorted identity order. Identities left without any face are dropped (named in
    `empty_classes`). FormatError when no photo has a face."""
    from cdface.errors import FormatError

    dataset = ImageFolderDataset(folder)
    found = find_faces(detector, dataset.paths, selection, workers=workers, progress=progress)
    rows = found.rows if all_faces else largest_per_photo(found.rows)
    skipped = found.no_face + found.errors
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    skipped_file = out / "skipped.txt"
    if skipped:
        from cdface.files import atomic_write

        atomic_write(skipped_file, "".join(f"{line}\n" for line in skipped))
    else:
        skipped_file.unlink(missing_ok=True)
    if not rows:
        raise FormatError(folder, None, f"a face in at least one photo; none in {len(dataset.paths)} photo(s) "
                          f"(first: {skipped[0] if skipped else 'none'})")
    photo_labels = dataset.labels[np.array([r.photo for r in rows], dtype=np.int64)]
    labels, kept_classes = contiguous_labels(photo_labels)
    cache: dict[str, np.ndarray] = {}  # the photo being cropped: its faces are packed one after another

    def crop(i: int) -> bytes:
        row = rows[i]
        if row.path not in cache:
            cache.clear()
            with open(row.path, "rb") as handle:
                cache[row.path] = decode_image(handle.read(), row.path)
        return encode_jpeg(align_face(cache[row.path], np.asarray(row.face.landmarks), size=size), quality)

    paths = write_insightface_rec(out, labels, crop, image_size=(size, size))
    named = set(int(c) for c in kept_classes)
    return PackSummary(
        rec=paths["rec"], faces=len(rows), classes=len(kept_classes), photos=len(dataset.paths),
        photos_with_face=len({r.photo for r in rows}), skipped=skipped,
        skipped_file=skipped_file if skipped else None,
        empty_classes=[n for c, n in enumerate(dataset.class_names) if c not in named],
        scan_note=dataset.scan.note(),
    )


def aligned_photo_crops(detector: FaceDetector, selection: FaceSelection | None = None, size: int = 112,
                        quality: int = 95, workers: int = 0, progress: bool = False
                        ) -> Callable[[list[Path]], tuple[dict[int, bytes], list[str]]]:
    """`cdface data make-pairs --detect`: a function of photo paths -> ({photo index: JPEG of its largest
    face aligned to size x size}, one line per photo without a face or unreadable), for
    `cdface.data.make_pairs.make_pair_set(photo_crops=...)`."""

    def crops(paths: list[Path]) -> tuple[dict[int, bytes], list[str]]:
        found = find_faces(detector, [str(p) for p in paths], selection, workers=workers, progress=progress)
        out: dict[int, bytes] = {}
        for row in largest_per_photo(found.rows):  # one row per photo: each photo decoded once
            with open(row.path, "rb") as handle:
                image = decode_image(handle.read(), row.path)
            out[row.photo] = encode_jpeg(align_face(image, np.asarray(row.face.landmarks), size=size), quality)
        return out, found.no_face + found.errors

    return crops

