"""``cdface data ...``: inspect, pack, make-bin, make-pairs, synthetic."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from cdface.cli_args import output_file, output_folder
from cdface.errors import FormatError

__all__ = ["register", "run_pack", "run_make_pairs"]


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect and build datasets (RecordIO, .bin, synthetic)")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    p = sub.add_parser(
        "inspect", help="summarise a .rec (or its folder), an image folder, an image list or a .bin pair file"
    )
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--check", action="store_true", help="decode every image; list corrupt ones and ones over the pixel cap"
    )
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        help="pixel cap for --check (default: $CDFACE_MAX_IMAGE_PIXELS or 64000000)",
    )
    p.set_defaults(func=_inspect)

    p = sub.add_parser("pack", help="pack an image folder root/<class>/<image> into train.rec/.idx/property")
    p.add_argument("image_folder")
    p.add_argument("out_dir", type=output_folder)
    p.add_argument("--quality", type=int, default=95, help="JPEG quality for images that are not JPEG already")
    p.set_defaults(func=run_pack)  # detect/data_cli.py adds --detect

    p = sub.add_parser("make-bin", help="build an insightface .bin from aligned images and an LFW pairs.txt")
    p.add_argument("root", help="folder of root/<name>/<name>_%%04d.jpg aligned 112x112 faces")
    p.add_argument("pairs_txt")
    p.add_argument("out", type=output_file, help="output .bin")
    p.set_defaults(func=_make_bin)

    p = sub.add_parser(
        "make-pairs", help="draw a balanced 10-fold verification pair set (.bin) from identity folders",
        description="Draw a seeded, balanced pair set from FOLDER/<identity>/<aligned crop> and write it in "
        "insightface's .bin layout (per fold: same pairs, then as many different pairs), readable by `cdface "
        "eval` and by insightface's loader; every pair is listed in <out stem>.pairs.txt. Folds are "
        "identity-disjoint when there are two identities with two images or more per fold.",
    )
    p.add_argument("folder", help="FOLDER/<identity>/<image>: aligned crops (112x112 for cdface's models)")
    p.add_argument("--out", required=True, type=output_file, help="the .bin to write")
    p.add_argument("--pairs", type=int, default=6000,
                   help="pairs in all, a multiple of 2 x folds (default 6000, as LFW; lowered to what the folder "
                   "allows)")
    p.add_argument("--folds", type=int, default=10, help="folds (default 10, insightface's protocol)")
    p.add_argument("--seed", type=int, default=0, help="random seed (the same seed draws the same pairs)")
    p.add_argument("--exclude-from", action="append", default=[], metavar="TRAINING_SET",
                   help="leave out identities of a training set: a folder (its sub-folder names), a .rec "
                   "(identities with an image identical to one of its records) or a text file of identity "
                   "names, one per line; repeatable")
    folds = p.add_mutually_exclusive_group()
    folds.add_argument("--disjoint-folds", dest="disjoint", action="store_true", default=None,
                       help="require identity-disjoint folds (an error when there are too few identities)")
    folds.add_argument("--mixed-folds", dest="disjoint", action="store_false",
                       help="every fold draws from all identities")
    p.set_defaults(func=run_make_pairs)  # detect/data_cli.py adds --detect

    p = sub.add_parser("synthetic", help="write the synthetic face benchmark (train.rec + eval.bin)")
    p.add_argument("out_dir", type=output_folder)
    p.add_argument("--identities", type=int, default=200, help="training identities")
    p.add_argument("--images-per-id", type=int, default=12)
    p.add_argument("--eval-identities", type=int, default=100)
    p.add_argument("--pairs", type=int, default=600, help="eval pairs (a multiple of 20)")
    p.add_argument("--hard-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_synthetic)

    from cdface.data.extract_cli import register_extract  # `data extract` lives in its own file

    register_extract(sub)


# ---- handlers ----


def _count_summary(labels: np.ndarray) -> dict:
    counts = np.bincount(labels) if labels.size else np.zeros(0, np.int64)
    return {
        "images": int(labels.size),
        "classes": int(counts.size),
        "per_class": {
            "min": int(counts.min()) if counts.size else 0,
            "median": float(np.median(counts)) if counts.size else 0.0,
            "max": int(counts.max()) if counts.size else 0,
            "first": counts[:10].tolist(),
        },
    }


LIST_SUFFIXES = (".lst", ".txt")


def inspect_path(path: str | Path, check: bool = False, max_pixels: int | None = None) -> dict:
    """Summary dict of a .bin, a RecordIO set (.rec or its folder), an image folder or an image list.

    With ``check`` every image is decoded under the pixel cap (``max_pixels``, see ``decode``) and the
    failures are listed by index with their error (file, record/pair index, what was wrong).
    """
    from cdface.data.datasets import ImageFolderDataset, ImageListDataset, RecordIODataset, resolve_recordio_paths
    from cdface.data.pairs_bin import load_bin

    p = Path(path)
    if not p.exists():
        raise FormatError(p, None, "no such file or folder")
    if p.suffix == ".bin":
        pairs = load_bin(p)
        summary: dict = {
            "kind": "bin",
            "path": str(p),
            "pairs": len(pairs),
            "same": int(pairs.issame.sum()),
            "different": int((~pairs.issame).sum()),
            "images": len(pairs.images),
        }
        if check:
            from cdface.data.decode import decode_image

            bad, shapes = [], set()
            for i, data in enumerate(pairs.images):
                try:
                    shapes.add(decode_image(data, p, f"image {i}", max_pixels).shape)
                except FormatError as exc:
                    bad.append({"index": i, "error": str(exc)})
            summary.update(bad_images=bad, shapes=sorted(str(s) for s in shapes))
        return summary
    if p.suffix == ".rec" or (p.is_dir() and any(p.glob("*.rec"))):
        rec, _ = resolve_recordio_paths(p)
        dataset = RecordIODataset(rec, cache_labels=False, max_pixels=max_pixels)
        layout = dataset.reader.layout()
        summary = {
            "kind": "recordio",
            "path": str(rec),
            "layout": "insightface" if layout.header_key is not None else "im2rec",
            "records": len(dataset.reader),
        }
        prop = rec.parent / "property"
        if prop.is_file():
            summary["property"] = prop.read_text().strip()
    elif p.is_dir():
        dataset = ImageFolderDataset(p, max_pixels=max_pixels)
        # what the scan passed over: hidden/system entries (__MACOSX, ._*, .DS_Store) and non-image files
        summary = {"kind": "folder", "path": str(p), "ignored": dataset.scan.ignored, "not_images": dataset.scan.other}
    elif p.suffix.lower() in LIST_SUFFIXES:
        dataset = ImageListDataset(p, max_pixels=max_pixels)
        summary = {"kind": "list", "path": str(p)}
    else:
        raise FormatError(p, None, "a .bin, a .rec, a folder holding train.rec, an image folder or a .lst/.txt list")
    summary.update(_count_summary(dataset.labels))
    if check:
        bad = []
        for i in range(len(dataset)):
            try:
                dataset.load_image(i)
            except FormatError as exc:
                bad.append({"index": i, "error": str(exc)})
        summary["bad_records"] = bad
    return summary


def _inspect(args: argparse.Namespace) -> int:
    summary = inspect_path(args.path, check=args.check, max_pixels=args.max_image_pixels)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    for key, value in summary.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):  # failures: one line each
            print(f"{key:>12}: {len(value)}")
            for entry in value[:50]:
                print(f"{'':>14}{entry['error']}")
            if len(value) > 50:
                print(f"{'':>14}... {len(value) - 50} more (--json lists all)")
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list) and len(value) > 10:
            value = f"{len(value)}: {value[:10]} ..."
        print(f"{key:>12}: {value}")
    return 0


def run_pack(args: argparse.Namespace) -> int:
    """`cdface data pack` of aligned crops (detect/data_cli.py handles `--detect`, then comes here without)."""
    from cdface.data.datasets import ImageFolderDataset
    from cdface.data.decode import decode_image, encode_jpeg, is_jpeg
    from cdface.data.recordio_writer import write_insightface_rec

    dataset = ImageFolderDataset(args.image_folder)
    shapes: set[tuple[int, ...]] = set()

    def get(i: int) -> bytes:
        data = dataset.paths[i].read_bytes()
        image = decode_image(data, dataset.paths[i])  # refuse corrupt files at packing time
        shapes.add(image.shape[:2])
        return data if is_jpeg(data) else encode_jpeg(image, args.quality)

    first = decode_image(dataset.paths[0].read_bytes(), dataset.paths[0])
    paths = write_insightface_rec(args.out_dir, dataset.labels, get, image_size=first.shape[:2])
    print(f"packed {len(dataset)} images of {dataset.num_classes} classes into {paths['rec']}")
    if dataset.scan.note():
        print(f"{args.image_folder}: {dataset.scan.note()}")
    if len(shapes) > 1:
        print(f"warning: images have several sizes {sorted(shapes)[:5]}; training uses every crop at the "
              "first one's size, which must be the model's input size (112x112 for cdface's models)")
    return 0


def _make_bin(args: argparse.Namespace) -> int:
    from cdface.data.lfw_pairs import make_bin_from_folder
    from cdface.data.pairs_bin import load_bin

    out = make_bin_from_folder(args.root, args.pairs_txt, args.out)
    pairs = load_bin(out)
    print(f"wrote {out}: {len(pairs)} pairs ({int(pairs.issame.sum())} same)")
    return 0


def run_make_pairs(args: argparse.Namespace, photo_crops: Any = None) -> int:
    """`cdface data make-pairs`; ``photo_crops`` (detect/data_cli.py, with `--detect`) aligns raw photos."""
    from cdface.data.make_pairs import make_pair_set

    r = make_pair_set(args.folder, args.out, num_pairs=args.pairs, folds=args.folds, seed=args.seed,
                      exclude=args.exclude_from, disjoint=args.disjoint, photo_crops=photo_crops)
    if r.no_face:
        print(f"left out {len(r.no_face)} photo(s) without a face or unreadable: "
              + "; ".join(r.no_face[:5]) + (" ..." if len(r.no_face) > 5 else ""))
    lowered = f" (asked for {r.requested}: the folder allows no more distinct pairs)" if r.pairs < r.requested else ""
    print(f"wrote {r.out}: {r.pairs} pairs{lowered}, {r.folds} folds of {r.pairs // r.folds} "
          f"({r.same // r.folds} same, then {(r.pairs - r.same) // r.folds} different), seed {r.seed}")
    print(f"drawn from {r.identities_used} of {r.identities_total} identities ({r.images_total} images); folds "
          + ("identity-disjoint" if r.disjoint else "share identities (fewer than 2 identities with 2+ images "
             "per fold)" if args.disjoint is None else "share identities (--mixed-folds)"))
    if r.excluded:
        shown = ", ".join(r.excluded[:10]) + (f", ... ({len(r.excluded)} in all)" if len(r.excluded) > 10 else "")
        print(f"left out {len(r.excluded)} identities of the training set(s): {shown}")
    if r.reencoded:
        print(f"{r.reencoded} images that were neither JPEG nor PNG were stored as JPEG (quality 95)")
    if len(r.sizes) > 1 or (r.sizes and r.sizes[0] != (112, 112)):
        print(f"note: image sizes {', '.join(f'{h}x{w}' for h, w in r.sizes[:5])}: a .bin holds aligned crops "
              "at the model's input size (112x112 for cdface's models)")
    print(f"pairs listed in {r.listing}")
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from cdface.data.synthetic import build_synthetic_benchmark
    from cdface.errors import ConfigError

    try:
        paths = build_synthetic_benchmark(
            args.out_dir,
            num_train_ids=args.identities,
            images_per_id=args.images_per_id,
            num_eval_ids=args.eval_identities,
            num_pairs=args.pairs,
            seed=args.seed,
            hard_fraction=args.hard_fraction,
        )
    except ValueError as exc:  # the builder validates its sizes: a bad option, not a bug
        raise ConfigError(str(exc)) from None
    for name, path in paths.items():
        print(f"{name:>9}: {path}")
    return 0
