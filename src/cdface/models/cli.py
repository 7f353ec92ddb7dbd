"""`cdface models`: a table of every registered backbone (params, GFLOPs as MACs, input, embedding)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cdface.models.flops import model_summary
from cdface.models.registry import list_models

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the `models` subcommand to the `cdface` parser."""
    parser = subparsers.add_parser(
        "models",
        help="list the registered backbones with parameter and MAC counts",
        description="List every registered backbone: parameters, GFLOPs (multiply-accumulates of one "
        "image, insightface's convention), input size and embedding size.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--embedding-size", type=int, default=512, help="embedding size to count with")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    rows = [model_summary(name, embedding_size=args.embedding_size) for name in list_models()]
    if args.json:
        print(json.dumps([{**row, "input_size": list(row["input_size"])} for row in rows], indent=2))
        return 0
    header = ("name", "params (M)", "GFLOPs (MACs)", "input", "embedding")
    lines = [
        (r["name"], f"{r['params'] / 1e6:.2f}", f"{r['gflops']:.2f}", "x".join(map(str, r["input_size"])),
         str(r["embedding_size"]))
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    for i, line in enumerate([header, *lines]):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0
