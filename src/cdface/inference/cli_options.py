"""Command-line options shared by the commands that run a model (`cdface eval`, `embed`, `compare`): which model,
how it is loaded and run, and how many CPU threads and DataLoader workers it gets."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cdface.cli_args import nonnegative_int, positive_int

__all__ = ["MODEL_HELP", "add_model_options", "load_kwargs", "make_embedder", "cpu_threads"]

MODEL_HELP = "a run directory, checkpoint, backbone state_dict (.pt/.pth) or .onnx"


def add_model_options(parser: argparse.ArgumentParser, multiple: bool = False, workers: bool = True,
                      required: bool = True, device: bool = True) -> None:
    """--model (repeatable with `multiple`; optional unless `required`), --arch, --device (unless the command
    has its own), --batch-size, --precision, the input overrides, --no-flip, --strict and (with `workers`)
    --workers."""
    if multiple:
        parser.add_argument("--model", action="append", required=True, metavar="PATH",
                            help=MODEL_HELP + " (repeat --model to compare several models; each keeps its "
                            "own model card: --input-mean/--input-std/--bgr fill in only for models without one, "
                            "PATH:mean=C1,C2,C3:std=C1,C2,C3:color=BGR sets one model's over its card)")
    else:
        parser.add_argument("--model", required=required, metavar="PATH", help=MODEL_HELP)
    parser.add_argument("--arch", help="architecture of a plain state_dict (default: from model.json or the keys)")
    if device:
        parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: the GPU when present)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="inference precision (autocast)")
    parser.add_argument("--input-mean", metavar="C1,C2,C3",
                        help="normalisation mean in 0..1 units, in the model's input channel order (R,G,B; "
                        "B,G,R with --bgr) (default: the model card's, else 0.5)")
    parser.add_argument("--input-std", metavar="C1,C2,C3",
                        help="normalisation std in 0..1 units, in the model's input channel order (default: the "
                        "model card's, else 0.5)")
    parser.add_argument("--bgr", action="store_true", default=None,
                        help="the model expects BGR channel order (default: the model card's, else RGB)")
    parser.add_argument("--no-flip", action="store_true",
                        help="no flip fusion (by default each image's and its mirror's embeddings are summed)")
    parser.add_argument("--strict", action="store_true",
                        help="images that are not at the model's input size are an error instead of a warning")
    if workers:
        from cdface.threads import available_cores

        parser.add_argument("--workers", type=nonnegative_int, default=min(4, available_cores() - 1),
                            help="DataLoader workers decoding/aligning images (torch threads get the other cores)")


def load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The `load_embedding_model` keywords given on the command line (arch, input_mean, input_std, bgr)."""
    from cdface.inference.input_config import parse_triple

    return {
        "arch": args.arch,
        "input_mean": parse_triple(args.input_mean, "--input-mean"),
        "input_std": parse_triple(args.input_std, "--input-std"),
        "bgr": args.bgr,
    }


def make_embedder(args: argparse.Namespace) -> Any:
    """The FaceEmbedder of `--model` with the model options."""
    from cdface.inference.embedder import FaceEmbedder

    return FaceEmbedder(args.model, device=args.device, precision=args.precision, batch_size=args.batch_size,
                        flip=not args.no_flip, **load_kwargs(args))


def cpu_threads(args: argparse.Namespace) -> Any:
    """Torch threads + `--workers` within this process's cores (`cdface.threads`); lowers args.workers if it
    would oversubscribe them, and gives a block that restores the thread count."""
    from cdface.threads import plan_threads, threads_applied

    plan = plan_threads(args.workers, processes_per_node=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if plan.note:
        print(f"cdface: {plan.note.replace('data.num_workers', '--workers')}", file=sys.stderr)
    args.workers = plan.workers
    return threads_applied(plan)
