"""`cdface eval | embed | search | export`: evaluation, feature extraction, search and ONNX export."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cdface.data.landmarks import read_landmark_file
from cdface.errors import FormatError

__all__ = ["register"]

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def _add_model_options(parser: argparse.ArgumentParser, multiple: bool = False) -> None:
    if multiple:
        parser.add_argument(
            "--model",
            action="append",
            required=True,
            metavar="PATH",
            help="checkpoint, backbone state_dict, run directory or .onnx (repeatable)",
        )
    else:
        parser.add_argument(
            "--model",
            required=True,
            metavar="PATH",
            help="checkpoint, backbone state_dict, run directory or .onnx",
        )
    parser.add_argument("--arch", help="architecture of a plain state_dict (default: model.json or inferred)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: the GPU when present)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--input-mean", metavar="C1,C2,C3",
                        help="normalisation mean in 0..1 units, in the model's input channel order (R,G,B; "
                        "B,G,R with --bgr); default 0.5")
    parser.add_argument("--input-std", metavar="C1,C2,C3",
                        help="normalisation std in 0..1 units, in the model's input channel order; default 0.5")
    parser.add_argument("--bgr", action="store_true", default=None, help="the model expects BGR channel order")
    parser.add_argument("--no-flip", action="store_true", help="no flip fusion (image + mirrored image)")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="DataLoader workers decoding/aligning images",
    )


def _load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from cdface.inference.input_config import parse_triple

    return {
        "arch": args.arch,
        "input_mean": parse_triple(args.input_mean, "--input-mean"),
        "input_std": parse_triple(args.input_std, "--input-std"),
        "bgr": args.bgr,
    }


def register(subparsers: Any) -> None:
    """Add `eval`, `embed`, `search` and `export`."""
    p = subparsers.add_parser("eval", help="evaluate model(s) on LFW-family .bin, IJB-B/C and MegaFace")
    _add_model_options(p, multiple=True)
    p.add_argument(
        "--targets",
        required=True,
        help="comma list: lfw,cfp_fp,agedb_30,calfw,cplfw,ijbb,ijbc,megaface or .bin paths",
    )
    p.add_argument("--data-root", help="directory holding <name>.bin, IJBB/, IJBC/, megaface/")
    p.add_argument("--out", help="write results.json, results.md and plots here")
    p.add_argument("--json", action="store_true", help="print {target: metrics} as JSON on stdout")
    p.add_argument("--ijb-protocols", default="11,1n", help="IJB protocols to run: 11, 1n or 11,1n")
    p.add_argument(
        "--megaface-sizes",
        default="",
        help="distractor subset sizes for the size curve (default: 10,100,...,all)",
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--quality", help="error-versus-reject on pair sets and IJB 1:1 with this per-image quality: "
                   "norm, faceness (IJB detector score) or a .npy file")
    p.set_defaults(func=_run_eval)

    e = subparsers.add_parser("embed", help="embed aligned face images (a folder or a list file) into .npy")
    e.add_argument("source", help="a folder (searched recursively) or a text file with one image path per line")
    _add_model_options(e)
    e.add_argument("--out", required=True, help="features .npy (N, D), L2-normalised; paths in <out>.paths.txt")
    e.add_argument("--landmarks", help="'<path> x1 y1 ... x5 y5' per line: align the images first")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_run_embed)

    s = subparsers.add_parser("search", help="exact top-k cosine search of query features in a gallery")
    s.add_argument("--gallery", required=True, help="gallery features .npy (G, D)")
    s.add_argument("--query", required=True, help="query features .npy (Q, D)")
    s.add_argument("--k", type=int, default=5)
    s.add_argument("--backend", choices=("torch", "faiss", "auto"), default="torch")
    s.add_argument("--device")
    s.add_argument("--out", help="write {'scores','indices'} to this .npz instead of printing JSON")
    s.set_defaults(func=_run_search)

    x = subparsers.add_parser("export", help="export a model to ONNX and check it against PyTorch")
    x.add_argument("--model", required=True, metavar="PATH")
    x.add_argument("--arch")
    x.add_argument("--out", required=True, help="the .onnx to write (its preprocessing goes to <stem>.json)")
    x.add_argument("--opset", type=int, default=17)
    x.add_argument("--dynamic-batch", action="store_true")
    x.add_argument("--fp16", action="store_true")
    x.add_argument("--input-mean", metavar="C1,C2,C3", help="in the model's input channel order")
    x.add_argument("--input-std", metavar="C1,C2,C3", help="in the model's input channel order")
    x.add_argument("--bgr", action="store_true", default=None)
    x.set_defaults(func=_run_export)


def _run_eval(args: argparse.Namespace) -> int:
    from cdface.inference.distributed import eval_process_group
    from cdface.inference.evaluate import evaluate_models

    rank, _, args.device = eval_process_group(args.device)  # torchrun: extract on every rank, rank 0 reports
    if rank != 0:
        args.out, args.json, args.no_progress = None, False, True

    sizes = tuple(int(v) for v in args.megaface_sizes.split(",") if v.strip())
    protocols = tuple(v.strip().lower() for v in args.ijb_protocols.split(",") if v.strip())
    document = evaluate_models(
        args.model,
        args.targets,
        args.data_root,
        args.out,
        plots=not args.no_plots,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        flip=not args.no_flip,
        num_workers=args.workers,
        progress=not args.no_progress,
        ijb_protocols=protocols,
        megaface_sizes=sizes,
        quality=args.quality,
        **_load_kwargs(args),
    )
    from cdface.inference.report import to_json_safe

    if rank != 0:
        return 0
    if args.json:
        models = document["models"]
        payload = models[0]["results"] if len(models) == 1 else {m["model"]: m["results"] for m in models}
        print(json.dumps(to_json_safe(payload), indent=2, allow_nan=False))
    else:
        for entry in document["models"]:
            for target, metrics in entry["results"].items():
                print(f"{entry['model']}  {target}: {_one_line(metrics)}")
        if args.out:
            print(f"wrote {Path(args.out) / 'results.json'} and results.md", file=sys.stderr)
    return 0


def _one_line(metrics: dict[str, Any]) -> str:
    if "accuracy" in metrics:
        return f"accuracy {metrics['accuracy']:.5f} +- {metrics['accuracy_std']:.5f}"
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    return ", ".join(f"{k} {v:.5g}" for k, v in list(flat.items())[:6]) or json.dumps(metrics)[:200]


def _list_images(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_EXTENSIONS)
    if source.is_file():
        base = source.parent
        lines = source.read_text(encoding="utf-8").splitlines()
        return [
            Path(line.strip()) if Path(line.strip()).is_absolute() else base / line.strip()
            for line in lines
            if line.strip() and not line.startswith("#")
        ]
    raise FormatError(source, None, "a folder of images or a list file (not found)")


def _run_embed(args: argparse.Namespace) -> int:
    from cdface.inference.embedder import FaceEmbedder, l2_normalize
    from cdface.inference.extract import ImageFiles, extract_features

    source = Path(args.source)
    paths = _list_images(source)
    landmarks = None
    if args.landmarks:
        table = read_landmark_file(Path(args.landmarks))
        root = source if source.is_dir() else source.parent
        rows = []
        for p in paths:
            key = next((k for k in (str(p), _relative(p, root), p.name) if k in table), None)
            if key is None:
                raise FormatError(args.landmarks, None, f"landmarks for every image; {p} has none")
            rows.append(table[key])
        landmarks = np.stack(rows) if rows else None
    embedder = FaceEmbedder(
        args.model,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        flip=not args.no_flip,
        **_load_kwargs(args),
    )
    dataset = ImageFiles(paths, landmarks, tuple(embedder.input_cfg["input_size"]), skip_errors=True)
    feats = extract_features(embedder, dataset, args.batch_size, args.workers, not args.no_progress, "embed")
    keep = np.setdiff1d(np.arange(len(paths)), np.array(feats.failed, dtype=np.int64))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, l2_normalize(feats.fused()[keep]).astype(np.float32))
    index_path = out.with_name(out.name.removesuffix(".npy") + ".paths.txt")
    index_path.write_text("".join(f"{paths[i]}\n" for i in keep), encoding="utf-8")
    if feats.errors:
        skipped_path = out.with_name(out.name.removesuffix(".npy") + ".skipped.txt")
        skipped_path.write_text("".join(f"{e}\n" for e in feats.errors), encoding="utf-8")
        print(f"skipped {len(feats.errors)} unreadable file(s), listed in {skipped_path}:", file=sys.stderr)
        for err in feats.errors[:10]:
            print(f"  {err}", file=sys.stderr)
    print(
        f"wrote {len(keep)} features to {out} (paths in {index_path}), {feats.images_per_second:.1f} images/s",
        file=sys.stderr,
    )
    return 0


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _load_features(path: str, what: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise FormatError(path, None, f"{what}: a .npy array without pickled objects ({exc})") from exc
    if arr.ndim != 2:
        raise FormatError(path, None, f"{what}: a 2-D (N, D) array, got shape {arr.shape}")
    return arr


def _run_search(args: argparse.Namespace) -> int:
    from cdface.inference.search import topk_search

    gallery = _load_features(args.gallery, "gallery features")
    query = _load_features(args.query, "query features")
    if gallery.shape[1] != query.shape[1]:
        raise FormatError(args.query, None, f"features of dimension {gallery.shape[1]}, got {query.shape[1]}")
    scores, indices = topk_search(np.asarray(query), gallery, k=args.k, device=args.device, backend=args.backend)
    if args.out:
        np.savez(args.out, scores=scores, indices=indices)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        rows = [
            {"query": q, "indices": indices[q].tolist(), "scores": [round(float(s), 6) for s in scores[q]]}
            for q in range(len(indices))
        ]
        print(json.dumps(rows, indent=1))
    return 0


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
