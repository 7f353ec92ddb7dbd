"""`cdface detect PATH...`: the faces in photos (box, score, five landmarks), as a table or JSON, and
optionally their aligned 112x112 crops."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cdface.cli_args import output_file, output_folder
from cdface.errors import FormatError

__all__ = ["register", "detection_record"]


def register(subparsers: Any) -> None:
    """Add `detect`, and `--detect` to `data pack` and `data make-pairs`."""
    from cdface.detect.registry import DETECTOR_HELP

    p = subparsers.add_parser(
        "detect",
        help="find faces in photos: box, score and 5 landmarks per face (table or JSON)",
        description="Detect the faces of photos. PATH is an image, a folder (searched recursively) or a text "
        "list of image paths; several may be given. Per face: the box [x1, y1, x2, y2], the detector's score and "
        "5 landmarks in the ArcFace template's order (the eye on the image's left, the one on its right, the "
        "nose tip, the mouth corner on the image's left, the one on its right), in the photo's pixels after its "
        "EXIF orientation. Faces are sorted by score; a photo without a face has none and the command still "
        "succeeds.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="an image, a folder of images or a list file")
    p.add_argument("--detector", default=None, metavar="NAME|FILE", help=DETECTOR_HELP + " (default: mtcnn)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--out", type=output_file, metavar="FILE", help="also write the JSON to this file")
    p.add_argument("--save-crops", type=output_folder, metavar="DIR",
                   help="write each face's aligned 112x112 crop (ArcFace template) into DIR as PNG")
    p.set_defaults(func=_run_detect)

    from cdface.detect.data_cli import extend_data_commands  # `data pack/make-pairs --detect` (own file)

    extend_data_commands(subparsers)


def detection_record(path: str, image: np.ndarray, faces: list) -> dict[str, Any]:
    """The JSON record of one photo: ``{"path", "width", "height", "faces": [{"box", "score", "landmarks"}]}``."""
    return {"path": path, "width": int(image.shape[1]), "height": int(image.shape[0]),
            "faces": [face.to_json() for face in faces]}


def _image_paths(specs: list[str]) -> tuple[list[Path], bool]:
    """The photos named by the PATH arguments, and whether they are exactly one image file given by itself."""
    from cdface.data.image_sources import resolve_image_source

    paths: list[Path] = []
    kinds = []
    for spec in specs:
        source = resolve_image_source(spec)
        if source.scan is not None and source.scan.note():  # what a folder scan passed over, as embed says it
            print(f"cdface detect: {spec}: {source.scan.note()}", file=sys.stderr)
        if source.kind == "recordio":
            raise FormatError(spec, None, "photos: an image, a folder of images or a list of image paths "
                                          "(a .rec holds crops that are aligned already)")
        paths.extend(source.paths)
        kinds.append(source.kind)
    return paths, kinds == ["image"]


def _crop_names(paths: list[Path]) -> list[str]:
    """A crop file prefix per photo: its stem, numbered where two photos share one."""
    from collections import Counter

    stems = [p.stem for p in paths]
    counts = Counter(stems)  # one pass: list.count per stem made a 20k-photo folder wait 10 s before detecting
    shared = {s for s, n in counts.items() if n > 1}
    return [f"{n:05d}_{s}" if s in shared else s for n, s in enumerate(stems)]


def _run_detect(args: argparse.Namespace) -> int:
    from cdface.data.align import align_face
    from cdface.data.decode import decode_image
    from cdface.detect.registry import create_detector
    from cdface.files import atomic_write, to_json_safe
    from cdface.threads import plan_threads, threads_applied

    paths, single = _image_paths(args.paths)
    detector = create_detector(args.detector)
    if args.out:  # before the detection, which may take minutes: the JSON's folder is made as embed makes its own
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    crops_dir = Path(args.save_crops) if args.save_crops else None
    if crops_dir is not None:
        crops_dir.mkdir(parents=True, exist_ok=True)
    names = _crop_names(paths)
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with threads_applied(plan_threads(0)):
        for path, prefix in zip(paths, names):
            try:
                image = decode_image(path.read_bytes(), source=path)
            except (FormatError, OSError) as exc:
                if single:  # the one photo asked for: its error is the command's
                    raise
                skipped.append({"path": str(path), "error": str(exc)})
                said = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"  # FormatError names it
                print(f"cdface detect: skipped {said}", file=sys.stderr)
                continue
            faces = detector.detect(image)
            record = detection_record(str(path), image, faces)
            if crops_dir is not None:
                for k, (face, entry) in enumerate(zip(faces, record["faces"]), 1):
                    crop_path = crops_dir / f"{prefix}_{k}.png"
                    atomic_write(crop_path, _png(align_face(image, face.landmarks)))
                    entry["crop"] = str(crop_path)
            records.append(record)
    if skipped and not records:  # every photo failed: nothing was detected (embed refuses such a source too)
        raise FormatError(", ".join(args.paths), None, f"at least one readable photo; none of {len(skipped)} could "
                          f"be read (first: {skipped[0]['error']})")
    result: dict[str, Any] = {"detector": detector.name, "images": records}
    if skipped:
        result["skipped"] = skipped
    text = json.dumps(to_json_safe(result), indent=2)
    if args.out:
        atomic_write(args.out, text + "\n")
    if args.json:
        print(text)
    else:
        _print_table(records)
    total = sum(len(r["faces"]) for r in records)
    print(f"cdface detect: {total} face(s) in {len(records)} photo(s), {sum(not r['faces'] for r in records)} "
          f"without a face" + (f", {len(skipped)} unreadable" if skipped else "") + f" ({detector.name})",
          file=sys.stderr)
    return 0


def _png(crop: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(crop[:, :, ::-1]))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 3-channel array
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def _print_table(records: list[dict[str, Any]]) -> None:
    for record in records:
        count = len(record["faces"])
        print(f"{record['path']}  {record['width']}x{record['height']}  "
              f"{count} face{'s' if count != 1 else ''}")
        for k, face in enumerate(record["faces"], 1):
            box = " ".join(f"{v:.1f}" for v in face["box"])
            marks = " ".join(f"{x:.1f},{y:.1f}" for x, y in face["landmarks"])
            print(f"  {k:2d}  score {face['score']:.3f}  box {box}  landmarks {marks}")
