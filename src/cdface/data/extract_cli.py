"""`cdface data extract`: the subcommand's options and handler (the work is `cdface.data.extract`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cdface.cli_args import output_folder, positive_int

__all__ = ["register_extract"]


def register_extract(sub: Any) -> None:
    """Add `extract` to the `cdface data` subcommands."""
    p = sub.add_parser(
        "extract",
        help="write the images of a .rec into an image folder <out>/<class>/<key>.jpg",
        description="Extract a RecordIO set (insightface's layout or im2rec's) into an image-folder layout: "
        "one folder per class label (zero-padded, so sorted order = label order), each image's bytes as "
        "stored. `cdface data pack` turns the folder back into a .rec with the same labels.",
    )
    p.add_argument("rec", help="a .rec file or a folder holding train.rec (+ .idx)")
    p.add_argument("--out", required=True, type=output_folder,
                   help="output folder (created; existing identical files are kept)")
    p.add_argument("--classes", help="only these class labels, e.g. 0,3,10-12 (default: all)")
    p.add_argument("--limit", type=positive_int, help="at most N images in all (default: no limit)")
    p.add_argument("--per-class", type=positive_int, help="at most N images of each class (default: all)")
    p.set_defaults(func=_run_extract)


def _run_extract(args: argparse.Namespace) -> int:
    from cdface.data.extract import extract_recordio, parse_class_list

    summary = extract_recordio(
        args.rec, args.out, classes=parse_class_list(args.classes), limit=args.limit, per_class=args.per_class
    )
    if summary.missing_classes:
        missing = summary.missing_classes
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        print(f"warning: {len(summary.missing_classes)} requested class(es) are not in {args.rec}: {shown}",
              file=sys.stderr)
    kept = f" ({summary.skipped_existing} already there)" if summary.skipped_existing else ""
    print(f"extracted {summary.images} images of {summary.classes} classes into {summary.out_dir}{kept}",
          file=sys.stderr)
    return 0
