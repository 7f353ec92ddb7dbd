"""Photos in `cdface embed | compare | search`: the `--detect` options, and the face rows (which photo, which
landmarks, which name) that those commands embed through `inference.extract.ImageFiles`.

A face comes either from a detector (`--detect [NAME|FILE]`, `cdface.detect.find_faces`) or from a
`--landmarks` file, which may hold several lines (faces) for one photo. Either way each face is one row,
cropped with its five points by `cdface.data.align.align_face` (insightface's `norm_crop`).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cdface.detect.options import add_detect_options, detector_from_args, selection_from_args
from cdface.errors import CdfaceError, ConfigError, FormatError

__all__ = [
    "FaceRows",
    "add_detect_options",
    "choose_face",
    "compare_faces",
    "embed_search_sides",
    "detect_rows",
    "landmark_rows",
]


@dataclass
class FaceRows:
    """What to embed: row r is photo `paths[r]` aligned with `landmarks[r]` (None: the files are crops),
    named `names[r]`. `skipped`: '<photo>: reason' for photos without a face. `faces`: per row, the
    detector's box, score and landmarks (JSON-ready), or None when the faces came from a landmark file."""

    paths: list[str]
    landmarks: np.ndarray | None
    names: list[str]
    skipped: list[str] = field(default_factory=list)
    faces: list[dict[str, object]] | None = None
    detector: str | None = None
    photos: int = 0


def detect_rows(args: argparse.Namespace, paths: list[Path], source: object, workers: int = 0,
                progress: bool = False) -> FaceRows:
    """Run `--detect` over `paths`: one row per kept face. FormatError naming `source` when no photo has a
    face (for one photo, the reason: none found, or none kept by the filters)."""
    from cdface.detect.photos import find_faces

    selection = selection_from_args(args)
    detector = detector_from_args(args)
    found = find_faces(detector, paths, selection, workers=workers, progress=progress)
    name = getattr(detector, "name", type(detector).__name__)
    skipped = found.no_face + found.errors
    print(f"{name}: {len(found.rows)} face(s) in {len(paths) - len(skipped)} of {len(paths)} photo(s), "
          f"{len(found.no_face)} without a face, {len(found.errors)} unreadable "
          f"({found.seconds:.1f} s)", file=sys.stderr)
    if not found.rows:
        if len(paths) == 1 and skipped:
            raise FormatError(source, None, "a photo with a face; " + skipped[0].removeprefix(f"{paths[0]}: "))
        first = skipped[0] if skipped else "no photos"
        raise FormatError(source, None, f"a face in at least one photo; none in {len(paths)} photo(s) (first: "
                          f"{first})")
    return FaceRows(found.paths, found.landmarks, found.names, skipped=skipped,
                    faces=[r.to_json() for r in found.rows], detector=name, photos=len(paths))


def landmark_rows(per_image: list[np.ndarray], paths: list[Path]) -> FaceRows:
    """Rows of a `--landmarks` file read with several lines per image (`per_image[i]`: (F, 5, 2)).

    An image with one line keeps its plain path as name (as before); one with F > 1 lines gives F rows
    named ``<photo>#face1`` .. ``#faceF`` in the file's order."""
    from cdface.detect.crops import face_name

    counts = np.array([len(f) for f in per_image], dtype=np.int64)
    photo = np.repeat(np.arange(len(paths)), counts)
    number = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    names = [str(paths[i]) if counts[i] == 1 else face_name(str(paths[i]), int(k)) for i, k in zip(photo, number)]
    landmarks = np.concatenate(per_image) if per_image else np.zeros((0, 5, 2))
    return FaceRows([str(paths[i]) for i in photo], landmarks, names, photos=len(paths))


def choose_face(path: Path, boxes: np.ndarray) -> int:
    """`compare`'s face of a photo with several: the largest (`cdface.detect.crops.largest_face`; for
    landmark lines, the box around the five points), said on stderr. `boxes` (F, 4) x1, y1, x2, y2."""
    from cdface.detect.crops import largest_face

    index = largest_face(boxes)
    if len(boxes) > 1:
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[index])
        print(f"{path}: {len(boxes)} faces; comparing the largest (face {index + 1}, box {x1},{y1},{x2},{y2})",
              file=sys.stderr)
    return index


def detect_unaligned_photos(args: argparse.Namespace, paths: list[Path], size: tuple[int, int]) -> None:
    """`compare`'s default for photos: when neither --detect, --landmarks nor --no-detect is given and an image
    is not at the model's input size (H, W), it is a photo rather than an aligned crop, so `args.detect` becomes
    the default detector (said on stderr). Resizing a whole photo into a crop compares two pictures, not two
    faces: a group photo and a picture with no face came out "same person" (cosine 0.55) that way."""
    if args.detect is not None or args.landmarks or args.no_detect:
        return
    from cdface.data.decode import decode_image
    from cdface.detect import DEFAULT_DETECTOR

    for path in paths:
        height, width = decode_image(path.read_bytes(), path).shape[:2]
        if (height, width) != tuple(size):
            print(f"compare: {path} is {width}x{height}, not an aligned {size[1]}x{size[0]} crop: finding the faces "
                  f"with {DEFAULT_DETECTOR} (--no-detect compares the images as they are)", file=sys.stderr)
            args.detect = DEFAULT_DETECTOR
            return


def compare_faces(args: argparse.Namespace, paths: list[Path], per_image: list[np.ndarray] | None
                  ) -> tuple[np.ndarray | None, list[dict[str, object] | None]]:
    """The (2, 5, 2) landmarks `compare` aligns its two photos with, and per side the detected face (box,
    score, how many faces) or None: from `--detect` (FormatError naming the photo when it has no face: a
    photo without a face is never compared) or from `--landmarks` lines (`per_image`); the largest face of
    a photo with several. (None, [None, None]) for aligned crops."""
    if args.detect is not None and per_image is not None:
        raise ConfigError("--detect finds the landmarks that --landmarks gives: use one of them")
    selection = selection_from_args(args)
    if per_image is not None:
        chosen = []
        for path, faces in zip(paths, per_image):
            boxes = np.concatenate([faces.min(axis=1), faces.max(axis=1)], axis=1)  # the five points' box
            chosen.append(faces[choose_face(path, boxes)])
        return np.stack(chosen), [None, None]
    if args.detect is None:
        return None, [None, None]
    from cdface.detect.photos import find_faces

    detector = detector_from_args(args)
    landmarks, infos = [], []
    for path in paths:
        found = find_faces(detector, [path], selection)
        if found.errors:
            raise CdfaceError(found.errors[0])
        if not found.rows:  # never "same person" for a side without a face
            raise FormatError(path, None, "a photo with a face; " + found.no_face[0].removeprefix(f"{path}: "))
        index = choose_face(path, np.stack([np.asarray(r.face.box, dtype=np.float64) for r in found.rows]))
        landmarks.append(np.asarray(found.rows[index].face.landmarks, dtype=np.float32))
        infos.append({"faces": len(found.rows)} | found.rows[index].face.to_json())
    return np.stack(landmarks), infos


def embed_search_sides(args: argparse.Namespace) -> dict[str, tuple[np.ndarray, list[str]]]:
    """`search`'s --gallery/--query given as images rather than a features .npy: {side: (L2-normalised
    float32 (N, D) features, row names)}, embedded with --model; with --detect the image files, folders and
    lists are photos (one row per face), while a .rec side holds aligned crops and is embedded as it is.
    Empty when both sides are .npy files. Skipped images (unreadable, no face) are said on stderr."""
    sides = {side: getattr(args, side) for side in ("gallery", "query") if _images(getattr(args, side), args.model)}
    if not sides:
        if args.detect is not None:
            raise ConfigError("--detect finds faces in photos; --gallery and --query are features (.npy) here")
        return {}
    if not args.model:
        side, path = next(iter(sides.items()))
        raise ConfigError(f"--{side} {path} is not a features .npy: give --model to embed its images (and "
                          "--detect if they are photos)")
    for side in sides:
        if getattr(args, f"{side}_paths"):
            raise ConfigError(f"--{side}-paths names the rows of a features .npy; the images of --{side} name "
                              "their own rows")
    from cdface.inference.cli_options import cpu_threads, make_embedder

    embedder = make_embedder(args)
    with cpu_threads(args):
        return {side: _embed_side(args, embedder, path) for side, path in sides.items()}


def _images(path: str, model: str | None) -> bool:
    """Whether a search side is images to embed: with --model anything but a .npy; without, a folder or an
    image file (to be told that --model is missing; other files get the .npy reader's message)."""
    from cdface.data.image_files import is_image_file

    if str(path).lower().endswith(".npy"):
        return False
    return bool(model) or os.path.isdir(path) or is_image_file(path)


def _embed_side(args: argparse.Namespace, embedder: Any, path: str) -> tuple[np.ndarray, list[str]]:
    from cdface.data.image_sources import resolve_image_source
    from cdface.embedding import l2_normalize
    from cdface.inference.extract import ImageFiles, RecordImages, extract_features
    from cdface.inference.input_check import check_input_sizes

    source = resolve_image_source(path)
    if source.scan is not None and source.scan.note():
        print(f"{path}: {source.scan.note()}", file=sys.stderr)
    size = tuple(embedder.input_cfg["input_size"])
    skipped: list[str] = []
    names = source.names
    if source.kind == "recordio":  # aligned crops already: --detect applies to the other side's photos
        assert source.rec is not None and source.keys is not None
        dataset: Any = RecordImages(source.rec, source.keys, size, skip_errors=True)
    elif args.detect is not None:
        rows = detect_rows(args, list(source.paths), path, args.workers)
        dataset = ImageFiles(rows.paths, rows.landmarks, size, skip_errors=True)
        names, skipped = rows.names, rows.skipped
    else:
        selection_from_args(args)  # a face filter without --detect is an error
        dataset = ImageFiles(source.paths, None, size, skip_errors=True)
    feats = extract_features(embedder, dataset, args.batch_size, args.workers, False, "embed")
    skipped += feats.errors
    if skipped:
        print(f"{path}: skipped {len(skipped)} image(s) (unreadable or without a face):", file=sys.stderr)
        for line in skipped[:10]:
            print(f"  {line}", file=sys.stderr)
    keep = np.setdiff1d(np.arange(len(names)), np.array(feats.failed, dtype=np.int64))
    if keep.size == 0:
        raise FormatError(path, None, f"at least one readable image; none of {len(names)} could be read "
                          f"(first: {feats.errors[0] if feats.errors else 'unknown error'})")
    check_input_sizes(feats.size_counts, size, str(path), strict=args.strict)
    return l2_normalize(feats.fused()[keep]).astype(np.float32), [names[i] for i in keep]
