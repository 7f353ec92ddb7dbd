"""`cdface embed | compare | search | export`: feature extraction, 1:1 comparison, search and ONNX export
(`cdface eval` is `cdface.eval.cli_eval`'s)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cdface.cli_args import add_allow_nonfinite, nonfinite_exit, output_file, positive_int
from cdface.errors import ConfigError, FormatError
from cdface.files import TEXT_ENCODING, atomic_write, atomic_writer, to_json_safe
from cdface.inference.cli_options import add_model_options, cpu_threads, make_embedder
from cdface.inference.cli_trust import add_search_threshold_options, add_trust_options
from cdface.inference.photo_cli import add_detect_options

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add `embed`, `compare`, `search`, `export`, and `import` under `cdface models`."""
    e = subparsers.add_parser(
        "embed",
        help="embed face images (one image, a folder, a list file or a .rec) into .npy",
        description="Embed aligned face crops into L2-normalised features (N, D) float32. SOURCE is one image, "
        "a folder (searched recursively), a text file with one image path per line, or a RecordIO .rec. "
        "Unaligned photos: --detect finds the faces (one row per face), or give 5-point landmarks with "
        "--landmarks (several lines for a photo with several faces) to align them to the ArcFace template.",
    )
    e.add_argument("source", help="an image, a folder, a list file (one path per line) or a .rec")
    add_model_options(e)
    e.add_argument("--out", required=True, type=output_file,
                   help="features .npy (N, D); names in <out>.paths.txt, one per row")
    e.add_argument("--landmarks", help="'<path> x1 y1 ... x5 y5' per line (per face): align the images first")
    add_detect_options(e)
    e.add_argument("--min-quality", type=float, metavar="NORM",
                   help="leave out faces whose embedding norm (un-normalised, model units; written per row to "
                   "<out>.quality.npy) is below NORM")
    add_allow_nonfinite(e)
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=_run_embed)

    c = subparsers.add_parser(
        "compare",
        help="cosine similarity of two face images and the same/different decision",
        description="Embed two aligned face images and print their cosine similarity and, with a threshold, "
        "whether they are the same person. --threshold-from takes the threshold an evaluation found "
        "(insightface's best squared-distance threshold t on L2-normalised embeddings becomes the cosine "
        "cut-off 1 - t/2).",
    )
    c.add_argument("image_a", help="first image (an aligned face crop, or any photo with --landmarks)")
    c.add_argument("image_b", help="second image")
    add_model_options(c, workers=False)
    group = c.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, help="cosine cut-off: same when cosine > threshold")
    group.add_argument("--threshold-from", metavar="RESULTS_JSON",
                       help="results.json of `cdface eval --out`: use its pair-set threshold (at --far F if given)")
    group.add_argument("--calibrate", metavar="PAIRS_BIN",
                       help="with --far: calibrate the threshold on this .bin pair set, embedded with --model")
    c.add_argument("--target", help="with --threshold-from: which pair set's threshold (if it holds several)")
    add_trust_options(c)
    c.add_argument("--landmarks", help="'<path> x1 y1 ... x5 y5' per line for the two images: align first")
    add_detect_options(c, several=False)
    c.add_argument("--no-detect", action="store_true",
                   help="compare images that are not at the model's input size as they are (resized), instead of "
                   "finding their faces with the default detector")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=_run_compare)

    s = subparsers.add_parser(
        "search",
        help="exact top-k cosine search of query features in a gallery",
        description="For each query row, the k gallery rows of highest cosine similarity (exact). Names come "
        "from the <features>.paths.txt files `cdface embed` writes beside its .npy. --gallery and --query may "
        "also be images (an image, a folder, a list, a .rec) embedded with --model first; photos with --detect "
        "(one row per face).",
    )
    s.add_argument("--gallery", required=True,
                   help="gallery features .npy (G, D), e.g. from cdface embed, or images with --model")
    s.add_argument("--query", required=True, help="query features .npy (Q, D), or images with --model")
    s.add_argument("--k", type=positive_int, default=5, help="results per query")
    s.add_argument("--backend", choices=("torch", "faiss", "auto"), default="torch",
                   help="torch (exact, chunked), faiss (IndexFlatIP, exact; needs faiss) or auto")
    s.add_argument("--device", help="cpu, cuda, ... (default: the GPU when present)")
    s.add_argument("--gallery-paths", help="names of the gallery rows (default: <gallery>.paths.txt if present)")
    s.add_argument("--query-paths", help="names of the query rows (default: <query>.paths.txt if present)")
    s.add_argument("--json", action="store_true", help="print JSON (one object per query) instead of a table")
    add_allow_nonfinite(s)
    s.add_argument("--out", type=output_file, help="also write {'scores','indices'} to this .npz")
    add_model_options(s, required=False, device=False)
    add_detect_options(s)
    add_trust_options(s, search=True)
    add_search_threshold_options(s)
    s.set_defaults(func=_run_search)

    x = subparsers.add_parser(
        "export",
        help="export a model to ONNX and check it against PyTorch",
        description="Export a PyTorch model to ONNX, run both on the same images and compare (the check's "
        "numbers are printed as JSON); the preprocessing card goes to <stem>.json beside the .onnx.",
    )
    x.add_argument("--model", required=True, metavar="PATH", help="a run directory, checkpoint or state_dict")
    x.add_argument("--arch", help="architecture of a plain state_dict (default: from model.json or the keys)")
    x.add_argument("--out", required=True, type=output_file,
                   help="the .onnx to write (its preprocessing goes to <stem>.json)")
    x.add_argument("--opset", type=positive_int, default=17, help="ONNX opset version")
    x.add_argument("--dynamic-batch", action="store_true", help="a dynamic batch axis (default: batch 1)")
    x.add_argument("--fp16", action="store_true", help="export in float16")
    x.add_argument("--input-mean", metavar="C1,C2,C3",
                   help="normalisation mean for the card, in the model's input channel order (default: the model's)")
    x.add_argument("--input-std", metavar="C1,C2,C3",
                   help="normalisation std for the card, in the model's input channel order (default: the model's)")
    x.add_argument("--bgr", action="store_true", default=None,
                   help="the model expects BGR channel order (default: the model's)")
    x.set_defaults(func=_run_export)

    from cdface.inference.import_cli import register_models_import  # `cdface models import` (own file)

    register_models_import(subparsers)


# ---------------------------------------------------------------------------------------------------- embed


def _landmarks_for(path: str | None, names: list[str], root: Path) -> list[np.ndarray] | None:
    """(F, 5, 2) landmarks of each image (F faces: lines) from a landmark file keyed by full path, path under
    root or name."""
    if not path:
        return None
    from cdface.data.image_files import list_entry
    from cdface.data.landmarks import read_landmark_file

    # keys written on Windows (photos\a.jpg) name the same files
    table = {str(list_entry(k)): v for k, v in read_landmark_file(Path(path), several=True).items()}
    file_names = Counter(Path(name).name for name in names)
    rows = []
    for name in names:
        p = Path(name)
        key = next((k for k in (str(p), _relative(p, root)) if k in table), None)
        if key is None and p.name in table:
            if file_names[p.name] > 1:  # a bare file name cannot say which of the images it means
                raise FormatError(path, None, f"landmarks keyed by path: {p.name} names {file_names[p.name]} "
                                  f"images of the source (e.g. {name}); write their paths relative to {root}")
            key = p.name
        if key is None:
            raise FormatError(path, None, f"landmarks for every image; {name} has none")
        rows.append(table[key])
    return rows


def _run_embed(args: argparse.Namespace) -> int:
    from cdface.data.image_sources import resolve_image_source
    from cdface.embedding import l2_normalize
    from cdface.inference.extract import ImageFiles, RecordImages, extract_features
    from cdface.inference.input_check import check_input_sizes

    source = resolve_image_source(args.source)
    if source.scan is not None and source.scan.note():
        print(f"{args.source}: {source.scan.note()}", file=sys.stderr)
    names = source.names
    embedder = make_embedder(args)
    size = tuple(embedder.input_cfg["input_size"])
    rows = None
    if source.kind == "recordio":
        if args.landmarks or args.detect is not None:
            raise ConfigError(f"--{'landmarks' if args.landmarks else 'detect'} applies to image files; the records "
                              "of a .rec are aligned crops already")
        assert source.rec is not None and source.keys is not None
        dataset: Any = RecordImages(source.rec, source.keys, size, skip_errors=True)
    with cpu_threads(args):
        if source.kind != "recordio":
            root = source.origin if source.kind == "folder" else source.origin.parent
            rows = _face_rows(args, source, root)
            names = rows.names if rows else names
            dataset = ImageFiles(rows.paths if rows else source.paths, rows.landmarks if rows else None, size,
                                 skip_errors=True)
        feats = extract_features(embedder, dataset, args.batch_size, args.workers, not args.no_progress, "embed")
    out = Path(args.out)
    stem = out.name.removesuffix(".npy")
    skipped_path = out.with_name(stem + ".skipped.txt")
    keep = np.setdiff1d(np.arange(len(names)), np.array(feats.failed, dtype=np.int64))
    keep, low_quality = _drop_low_quality(feats.plain, keep, names, args.min_quality)
    skipped = [*(rows.skipped if rows else []), *feats.errors, *low_quality]
    if not skipped:
        skipped_path.unlink(missing_ok=True)  # an earlier run's list would describe images of another run
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(skipped_path, "".join(f"{e}\n" for e in skipped))
        if len(skipped) > len(low_quality):
            print(f"skipped {len(skipped) - len(low_quality)} image(s) (unreadable or without a face), listed in "
                  f"{skipped_path}:", file=sys.stderr)
        if low_quality:
            print(f"skipped {len(low_quality)} low-quality face(s) (embedding norm < --min-quality "
                  f"{args.min_quality:g}), listed in {skipped_path}:", file=sys.stderr)
        for err in skipped[:10]:
            print(f"  {err}", file=sys.stderr)
    if keep.size == 0 and low_quality:
        raise ConfigError(f"{args.source}: every readable face ({len(low_quality)}) is below --min-quality "
                          f"{args.min_quality:g} (listed in {skipped_path})")
    if keep.size == 0:
        raise FormatError(args.source, None, f"at least one readable image; none of {len(names)} could be read "
                          f"(first: {feats.errors[0] if feats.errors else 'unknown error'})")
    check_input_sizes(feats.size_counts, size, str(args.source), strict=args.strict)
    fused = feats.fused()[keep]
    from cdface.eval.verification import count_nonfinite_rows

    nonfinite = count_nonfinite_rows(fused)
    out.parent.mkdir(parents=True, exist_ok=True)
    out = out.with_name(stem + ".npy")  # np.save's rule: the .npy suffix is added when missing
    with atomic_writer(out) as handle:
        np.save(handle, l2_normalize(fused).astype(np.float32))
    index_path = out.with_name(stem + ".paths.txt")
    atomic_write(index_path, "".join(f"{names[i]}\n" for i in keep))
    faces_path = out.with_name(stem + ".faces.json")
    if rows and rows.faces is not None:  # the detector's box, score and points of each row, for quality checks
        atomic_write(faces_path, json.dumps({"detector": rows.detector, "photos": rows.photos,
                                             "faces": [{"row": r} | rows.faces[i] for r, i in enumerate(keep)],
                                             "skipped": skipped}, indent=1) + "\n")
    else:
        faces_path.unlink(missing_ok=True)
    from cdface.inference.face_quality import embedding_norms

    with atomic_writer(out.with_name(stem + ".quality.npy")) as handle:  # per row: the embedding norm
        np.save(handle, embedding_norms(feats.plain[keep]))
    print(
        f"wrote {len(keep)} features to {out} (names in {index_path}), {feats.images_per_second:.1f} images/s",
        file=sys.stderr,
    )
    return nonfinite_exit("embed", {str(args.source): (nonfinite, int(keep.size))}, args.allow_nonfinite)


def _face_rows(args: argparse.Namespace, source: Any, root: Path) -> Any:
    """The face rows of --detect or --landmarks (`photo_cli.FaceRows`); None for aligned crops."""
    from cdface.inference.photo_cli import detect_rows, landmark_rows, selection_from_args

    if args.detect is not None and args.landmarks:
        raise ConfigError("--detect finds the landmarks that --landmarks gives: use one of them")
    if args.detect is not None:
        return detect_rows(args, list(source.paths), args.source, args.workers, not args.no_progress)
    selection_from_args(args)  # a face filter without --detect is an error
    per_image = _landmarks_for(args.landmarks, source.names, root)
    return landmark_rows(per_image, list(source.paths)) if per_image is not None else None


def _drop_low_quality(plain: np.ndarray, keep: np.ndarray, names: list[str], min_quality: float | None
                      ) -> tuple[np.ndarray, list[str]]:
    """`keep` without the rows whose embedding norm is below --min-quality, and a line per dropped row."""
    if min_quality is None:
        return keep, []
    from cdface.inference.face_quality import below_quality, embedding_norms, norm_note

    norms = embedding_norms(plain)
    if note := norm_note(norms[keep]):
        print(f"cdface: warning: {note}", file=sys.stderr)
    low = below_quality(norms[keep], min_quality)
    lines = [f"{names[i]}: low quality (embedding norm {norms[i]:.4g} < {min_quality:g})" for i in keep[low]]
    return keep[~low], lines


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# -------------------------------------------------------------------------------------------------- compare


def _run_compare(args: argparse.Namespace) -> int:
    from cdface.data.image_sources import is_image_file
    from cdface.eval.thresholds import CosineThreshold, threshold_from_results
    from cdface.eval.verification import count_nonfinite_rows
    from cdface.inference.calibration import threshold_at_far_from
    from cdface.inference.cli_trust import check_far_options, quality_fields
    from cdface.inference.embedder import compare
    from cdface.inference.extract import ImageFiles, extract_features
    from cdface.inference.input_check import check_input_sizes

    paths = [Path(args.image_a), Path(args.image_b)]
    for path in paths:
        if not path.is_file():
            raise FormatError(path, None, "an image file" + (" (it is a folder; compare takes two images, embed a "
                                                             "folder)" if path.is_dir() else " (not found)"))
        if not is_image_file(path):
            raise FormatError(path, None, "an image file (JPEG, PNG, BMP, GIF, WebP, TIFF, PPM)")
    if args.target and not args.threshold_from:
        raise ConfigError("--target picks a pair set of --threshold-from RESULTS_JSON; give that too")
    check_far_options(args)
    threshold: CosineThreshold | None = None
    if args.threshold is not None:
        if not -1.0 <= args.threshold <= 1.0:
            raise ConfigError(f"--threshold is a cosine in [-1, 1], got {args.threshold}")
        threshold = CosineThreshold(args.threshold, None, "--threshold (cosine)")
    elif args.threshold_from and args.far is None:
        threshold = threshold_from_results(args.threshold_from, args.target, model=args.model)
    embedder = make_embedder(args)
    if args.far is not None:
        threshold = threshold_at_far_from(args.far, args.threshold_from, args.calibrate, args.target, args.model,
                                          embedder, args.batch_size)
    size = tuple(embedder.input_cfg["input_size"])
    from cdface.inference.photo_cli import compare_faces, detect_unaligned_photos

    detect_unaligned_photos(args, paths, size)  # a photo is never compared as if it were a crop
    landmarks, faces = compare_faces(args, paths, _landmarks_for(args.landmarks, [str(p) for p in paths],
                                                                 paths[0].parent))
    feats = extract_features(embedder, ImageFiles(paths, landmarks, size), 2, 0, False, "compare")
    check_input_sizes(feats.size_counts, size, f"{paths[0]}, {paths[1]}", strict=args.strict)
    fused = feats.fused()
    if count_nonfinite_rows(fused):
        raise ConfigError(f"{args.model}: the model gave non-finite (NaN/inf) embeddings; check its weights")
    cosine = compare(fused[0], fused[1])
    result: dict[str, Any] = {"image_a": str(paths[0]), "image_b": str(paths[1]), "cosine": round(cosine, 6)}
    result.update({f"face_{side}": face for side, face in zip("ab", faces) if face is not None})
    quality, low = quality_fields(feats.plain, [str(p) for p in paths], args.min_quality)
    result.update(quality)
    if threshold is not None:
        result.update(same=bool(threshold.same(cosine)), threshold=round(threshold.cosine, 6),
                      threshold_source=threshold.source)
        if threshold.far is not None:
            result.update(threshold_far=threshold.far, threshold_rule="same when cosine >= threshold")
        if threshold.distance is not None:
            result["threshold_squared_distance"] = threshold.distance
        if low:  # a face below --min-quality gets no decision: a low-quality face is no evidence either way
            result["same"] = None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"cosine similarity {cosine:.4f}")
    if threshold is None:
        print("no threshold given: pass --threshold COS, --threshold-from results.json or --far F with "
              "--threshold-from/--calibrate for a decision", file=sys.stderr)
    elif low:
        print(f"undecided: low-quality face (embedding norm below --min-quality {args.min_quality:g}): "
              + ", ".join(low))
    else:
        op = threshold.operator if result["same"] else ("<" if threshold.inclusive else "<=")
        verdict = "same person" if result["same"] else "different people"
        print(f"{verdict} (cosine {op} threshold {threshold.cosine:.4f})")
        print(f"threshold: {threshold.source}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------------- search


def _read_names(features: str, explicit: str | None, rows: int) -> list[str] | None:
    """Row names from a paths file (explicit, else <features stem>.paths.txt); None when there is none."""
    path = Path(explicit) if explicit else Path(features).with_name(Path(features).name.removesuffix(".npy")
                                                                    + ".paths.txt")
    if not path.is_file():
        if explicit:
            raise FormatError(path, None, "a names file, one line per feature row (not found)")
        return None
    try:
        names = path.read_text(encoding=TEXT_ENCODING).splitlines()
    except UnicodeDecodeError:
        raise FormatError(path, None, "a UTF-8 text file, one name per feature row") from None
    if len(names) != rows:
        raise FormatError(path, None, f"one name per row of {features} ({rows} rows), got {len(names)} lines")
    return names


def _run_search(args: argparse.Namespace) -> int:
    from cdface.eval.feature_files import load_npy
    from cdface.inference.cli_trust import SearchTrust
    from cdface.inference.photo_cli import embed_search_sides
    from cdface.inference.search import faiss_available

    embedded = embed_search_sides(args)  # the sides given as images (with --model), embedded here
    gallery = embedded["gallery"][0] if "gallery" in embedded else load_npy(args.gallery, "gallery features",
                                                                             mmap=True)
    query = embedded["query"][0] if "query" in embedded else load_npy(args.query, "query features")
    for path, arr in ((args.gallery, gallery), (args.query, query)):
        if arr.ndim != 2 or 0 in arr.shape or arr.dtype.kind not in "fiu":
            raise FormatError(path, None, f"a numeric (N, D) array with N, D >= 1, got shape {arr.shape} {arr.dtype}")
    if gallery.shape[1] != query.shape[1]:
        raise FormatError(args.query, None, f"features of dimension {gallery.shape[1]} (the gallery's), "
                          f"got {query.shape[1]}")
    if args.backend == "faiss" and not faiss_available():
        raise ConfigError("--backend faiss needs the faiss package (pip install faiss-cpu); or use --backend torch")
    gallery_names = (embedded["gallery"][1] if "gallery" in embedded else
                     _read_names(args.gallery, args.gallery_paths, gallery.shape[0]))
    query_names = embedded["query"][1] if "query" in embedded else _read_names(args.query, args.query_paths,
                                                                                 query.shape[0])
    gallery_labels = _read_names(args.gallery, args.gallery_labels, gallery.shape[0]) if args.gallery_labels else None
    trust = SearchTrust(args, gallery_names, gallery_labels, args.query, query.shape[0])
    scores, indices = trust.search(np.asarray(query), gallery, args.k)
    from cdface.eval.verification import count_nonfinite_rows

    nonfinite = {  # the gallery may be memory-mapped: count_nonfinite_rows reads it in chunks
        str(args.query): (count_nonfinite_rows(query), int(query.shape[0])),
        str(args.gallery): (count_nonfinite_rows(gallery), int(gallery.shape[0])),
    }
    if args.out:
        out_path = Path(args.out)
        if out_path.suffix != ".npz":  # np.savez's rule: the .npz suffix is added when missing
            out_path = out_path.with_name(out_path.name + ".npz")
        with atomic_writer(out_path) as handle:
            np.savez(handle, scores=scores, indices=indices)
        print(f"wrote {out_path}", file=sys.stderr)
    answers = trust.answers(scores, indices, gallery_names)
    rows = []
    for q in range(len(indices)):
        hits = [
            {"rank": r + 1, "index": int(i), "score": round(float(sc), 6)} | trust.hit(int(i), gallery_names)
            for r, (i, sc) in enumerate(zip(indices[q], scores[q]))
        ]
        rows.append({"query": q} | ({"query_path": query_names[q]} if query_names else {})
                    | (answers[q] if answers else {}) | {"results": hits})
    if trust.header():
        print(trust.header(), file=sys.stderr)
    if args.json:  # strict JSON: a non-finite score (a NaN/inf feature row, ranked last) is null
        print(json.dumps(to_json_safe(rows), indent=1, allow_nan=False))
    else:
        for row in rows:
            print(f"query {row['query']}" + (f"  {row['query_path']}" if "query_path" in row else "")
                  + (f"  -> {row['answer']}" + (f" ({row['answer_score']:.4f})" if row["answer_score"] is not None
                                                 else "") if "answer" in row else ""))
            for hit in row["results"]:
                name = hit.get("path", hit.get("identity", f"gallery row {hit['index']}"))
                tag = f"  [{hit['identity']}]" if "path" in hit and "identity" in hit else ""
                print(f"  {hit['rank']:>3}. {hit['score']:.4f}  {name}{tag}")
    return nonfinite_exit("search", nonfinite, args.allow_nonfinite)


# --------------------------------------------------------------------------------------------------- export


def _run_export(args: argparse.Namespace) -> int:
    from cdface.inference.export import export_onnx
    from cdface.inference.input_config import parse_triple

    report = export_onnx(
        args.model,
        args.out,
        opset=args.opset,
        dynamic_batch=args.dynamic_batch,
        fp16=args.fp16,
        arch=args.arch,
        input_mean=parse_triple(args.input_mean, "--input-mean"),
        input_std=parse_triple(args.input_std, "--input-std"),
        bgr=args.bgr,
    )
    print(json.dumps(report.to_dict(), indent=2))
    if not report.ok:
        print(
            f"export check failed: max |onnx - torch| = {report.max_abs_diff:.3g} > {report.tolerance:.3g}",
            file=sys.stderr,
        )
        return 1
    return 0
