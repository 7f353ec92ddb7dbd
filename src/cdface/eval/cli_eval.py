"""`cdface eval`: evaluate model(s) on benchmarks end to end (`cdface.eval.evaluate.evaluate_models`), print a
line per target and write the report with --out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cdface.cli_args import (
    INVALID_RESULT_EXIT,
    add_allow_nonfinite,
    far_list,
    int_list,
    nonfinite_exit,
    output_folder,
)
from cdface.inference.cli_options import add_model_options, cpu_threads, load_kwargs

__all__ = ["register_eval"]


def register_eval(subparsers: Any) -> None:
    """Add the `eval` command."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate model(s) on LFW-family .bin, IJB-B/C and MegaFace",
        description="Evaluate one or more models with the field's protocols (insightface's numbers). Writes "
        "results.json (all metrics, provenance, the preprocessing used), results.md (a paper-style table) "
        f"and plots with --out. Exit status: 0, 2 for a user mistake, {INVALID_RESULT_EXIT} when embeddings "
        "were non-finite (see --allow-nonfinite).",
    )
    add_model_options(p, multiple=True)
    p.add_argument("--targets", required=True,
                   help="comma list: lfw,cfp_fp,agedb_30,calfw,cplfw (with --data-root), ijbb, ijbc, megaface, "
                   "tinyface, rfw, .bin paths, or folders in LFW's layout with pairs.txt (photos with --detect)")
    p.add_argument("--data-root", help="directory holding <name>.bin, IJBB/, IJBC/, megaface/")
    p.add_argument("--out", type=output_folder,
                   help="write results.json, results.md and plots (ROC, score histograms) here")
    p.add_argument("--json", action="store_true", help="print {target: metrics} as JSON on stdout")
    p.add_argument("--ijb-protocols", type=_ijb_protocols, default=("11", "1n"), metavar="11,1n",
                   help="IJB protocols to run: 11, 1n or 11,1n (default: both)")
    p.add_argument("--megaface-sizes", type=int_list, default=(), metavar="N1,N2,...",
                   help="distractor subset sizes for the size curve (default: 10,100,...,all)")
    p.add_argument("--far", type=far_list, default=None, metavar="F1,F2,...",
                   help="TAR at these FARs for every protocol (pair sets: besides insightface's val at 1e-3) "
                   "(default: pair sets none, IJB 1e-6,...,1e-1, MegaFace 1e-4,...,1e-9)")
    add_allow_nonfinite(p)
    p.add_argument("--quality", help="error-versus-reject on pair sets and IJB 1:1 with this per-image quality: "
                   "norm (MagFace: norm of the plain image's embedding, pairs compared on it), norm-fused (the same "
                   "flip-fused), faceness (IJB detector score) or a .npy file")
    from cdface.detect.options import add_detect_options

    add_detect_options(p, several=False, what="for a folder target (LFW's layout with pairs.txt): the largest "
                       "face of each photo; a pair with a photo without a face is left out and counted")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_eval)


def _ijb_protocols(text: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(v.strip().lower() for v in text.split(",") if v.strip()))
    if not items or set(items) - {"11", "1n"}:
        raise argparse.ArgumentTypeError(f"IJB protocols are 11 and/or 1n, e.g. 11,1n; got {text!r}")
    return items


def _run_eval(args: argparse.Namespace) -> int:
    with cpu_threads(args):
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    from cdface.eval.evaluate import evaluate_models
    from cdface.files import to_json_safe
    from cdface.inference.distributed import eval_process_group

    rank, _, args.device = eval_process_group(args.device)  # torchrun: extract on every rank, rank 0 reports
    if rank != 0:
        args.out, args.json, args.no_progress = None, False, True

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
        ijb_protocols=args.ijb_protocols,
        megaface_sizes=args.megaface_sizes,
        far_levels=args.far,
        strict=args.strict,
        quality=args.quality,
        **_detect_options(args),
        **load_kwargs(args),
    )
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
            plots = "" if args.no_plots else " and plots"
            print(f"wrote {Path(args.out) / 'results.json'}, results.md{plots}", file=sys.stderr)
    counts = {}
    for entry in document["models"]:
        for target, metrics in entry["results"].items():
            n_images = (entry["provenance"].get(target) or {}).get("num_images", 0)
            counts[f"{entry['model']} {target}"] = (int(metrics.get("nonfinite_embeddings") or 0), int(n_images))
    return nonfinite_exit("eval", counts, args.allow_nonfinite)


def _detect_options(args: argparse.Namespace) -> dict[str, Any]:
    """`detect` and `face_filter` for folder targets; {} without --detect (a filter alone is an error)."""
    from cdface.detect.options import selection_from_args
    from cdface.errors import ConfigError
    from cdface.eval.evaluate import is_folder_target, parse_targets

    selection_from_args(args)
    if args.detect is None:
        return {}
    if not any(is_folder_target(t, args.data_root) for t in parse_targets(args.targets)):
        # it would be ignored: the benchmarks hold aligned crops (or their own landmarks), never detected here
        raise ConfigError(f"--detect finds faces in the photos of a folder target (LFW's layout with pairs.txt); "
                          f"{args.targets} holds aligned crops")
    return {"detect": args.detect, "face_filter": {"min_score": args.min_score, "min_face_size": args.min_face_size}}


def _one_line(metrics: dict[str, Any]) -> str:
    invalid = " (INVALID: non-finite embeddings)" if metrics.get("valid") is False else ""
    if "accuracy" in metrics:
        text = f"accuracy {metrics['accuracy']:.5f} +- {metrics['accuracy_std']:.5f}"
        tars = metrics.get("tar_at_far") or {}
        if tars:
            text += ", " + ", ".join(f"TAR@{far} {v:.5f}" for far, v in tars.items() if v is not None)
        return text + invalid
    tars = metrics.get("tar_at_far") or (metrics.get("verification") or {}).get("tar_at_far") or {}
    parts = [f"TAR@{far} {v:.5f}" for far, v in tars.items() if v is not None]
    rank1 = metrics.get("rank1", (metrics.get("identification") or {}).get("rank1"))
    if rank1 is not None:
        parts.insert(0, f"rank-1 {rank1:.5f}")
    return (", ".join(parts) or json.dumps(metrics)[:200]) + invalid
