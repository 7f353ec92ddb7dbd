"""The command-line options that pick a face detector and filter its faces (`--detect [NAME|FILE]`,
`--min-score`, `--min-face-size`, `--max-faces`), shared by `embed`, `compare`, `search` and `data pack`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from cdface.cli_args import positive_int
from cdface.errors import ConfigError

__all__ = ["add_detect_options", "detector_from_args", "detector_spec", "selection_from_args"]


def detector_spec(text: str) -> str:
    """`--detect`'s value: a detector name or an .onnx file. A folder or an image given there is the images
    argparse took as the detector (``--detect photos/``): refused with the fix."""
    if os.path.isdir(text) or (os.path.isfile(text) and not text.lower().endswith(".onnx")):
        raise argparse.ArgumentTypeError(
            f"takes a detector name (mtcnn) or an .onnx file, got {text!r}, which looks like your images: put "
            "--detect after them, or write --detect=mtcnn"
        )
    return text


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"is a detector score in [0, 1], got {text!r}")
    return value


def _pixels(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"is a size in pixels >= 0, got {text!r}")
    return value


def add_detect_options(parser: argparse.ArgumentParser, several: bool = True, what: str | None = None) -> None:
    """--detect [NAME|FILE], --min-score, --min-face-size and (with `several`) --max-faces. `what` ends
    --detect's help (default: one row per face, or the largest face of each photo without `several`)."""
    what = what or ("one row per face" if several else "the largest face of each photo")
    parser.add_argument(
        "--detect", nargs="?", const="mtcnn", default=None, type=detector_spec, metavar="NAME|FILE",
        help="the images are photos: find the faces (default detector: mtcnn; or an .onnx detector) and align "
        f"each with the points found; {what}",
    )
    parser.add_argument("--min-score", type=_score, default=0.0,
                        help="with --detect: keep faces with a detector score >= this")
    parser.add_argument("--min-face-size", type=_pixels, default=0.0, metavar="PIXELS",
                        help="with --detect: keep faces whose box's shorter side is >= this many pixels")
    if several:
        parser.add_argument("--max-faces", type=positive_int, default=None, metavar="N",
                            help="with --detect: at most N faces per photo, the highest-scored (default: all)")


def selection_from_args(args: argparse.Namespace) -> Any:
    """The FaceSelection of the command line; ConfigError when a filter is given without --detect."""
    from cdface.detect.crops import FaceSelection

    max_faces = getattr(args, "max_faces", None)
    if args.detect is None and (args.min_score or args.min_face_size or max_faces):
        raise ConfigError("--min-score, --min-face-size and --max-faces filter detected faces: add --detect")
    return FaceSelection(max_faces=max_faces, min_face_size=args.min_face_size, min_score=args.min_score)


def detector_from_args(args: argparse.Namespace) -> Any:
    """The FaceDetector `--detect` names (`cdface.detect.create_detector`)."""
    from cdface.detect import create_detector

    return create_detector(None if args.detect == "mtcnn" else args.detect)
