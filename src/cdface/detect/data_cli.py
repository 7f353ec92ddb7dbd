"""`--detect` for `cdface data pack` and `cdface data make-pairs`: their folder holds raw photos, whose faces
are detected and aligned first. data/ registers both commands for aligned crops; detect/ sits above data/ in the
pipeline, so it extends them here rather than data/ importing the detectors."""

from __future__ import annotations

import argparse
import sys

from cdface.cli_args import subcommand_parser
from cdface.data.cli import run_make_pairs, run_pack
from cdface.detect.options import add_detect_options, detector_from_args, selection_from_args
from cdface.errors import ConfigError

__all__ = ["extend_data_commands"]


def extend_data_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `--detect` (and the face filters) to the registered `data pack` and `data make-pairs`."""
    p = subcommand_parser(subparsers, "data", "pack")
    add_detect_options(p, what="pack the largest face of each photo (every face with --all-faces) as an aligned "
                       "112x112 crop; photos without a face are listed in OUT_DIR/skipped.txt")
    p.add_argument("--all-faces", action="store_true", help="with --detect: every face of a photo, not the largest")
    p.set_defaults(func=_pack)

    p = subcommand_parser(subparsers, "data", "make-pairs")
    add_detect_options(p, several=False, what="the folder holds raw photos: each photo's largest face is "
                       "aligned and stored; photos without a face are left out and counted")
    p.set_defaults(func=_make_pairs)


def _pack(args: argparse.Namespace) -> int:
    if args.detect is None:
        if args.all_faces:
            raise ConfigError("--all-faces chooses which detected faces are packed: add --detect")
        selection_from_args(args)  # a face filter without --detect is an error
        return run_pack(args)
    from cdface.detect.pack import pack_photo_folder

    summary = pack_photo_folder(detector_from_args(args), args.image_folder, args.out_dir, selection_from_args(args),
                                all_faces=args.all_faces, quality=args.quality,
                                progress=sys.stderr.isatty())
    print(f"packed {summary.faces} face(s) of {summary.classes} classes from {summary.photos_with_face} of "
          f"{summary.photos} photos into {summary.rec}")
    if summary.skipped:
        print(f"{len(summary.skipped)} photo(s) without a face or unreadable, listed in {summary.skipped_file}")
    if summary.empty_classes:
        print(f"{len(summary.empty_classes)} class folder(s) without any face, not packed: "
              f"{', '.join(summary.empty_classes[:10])}")
    if summary.scan_note:
        print(f"{args.image_folder}: {summary.scan_note}")
    return 0


def _make_pairs(args: argparse.Namespace) -> int:
    selection = selection_from_args(args)  # a face filter without --detect is an error
    crops = None
    if args.detect is not None:
        from cdface.detect.pack import aligned_photo_crops

        crops = aligned_photo_crops(detector_from_args(args), selection)
    return run_make_pairs(args, photo_crops=crops)
