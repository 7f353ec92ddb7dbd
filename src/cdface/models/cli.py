"""`cdface models`: a table of every registered backbone (params, GFLOPs as MACs, input, embedding, aliases);
`cdface models known`: the released checkpoints cdface recognises (`cdface.models.known`).
(`cdface models import` checks an ONNX graph with onnxruntime, inference/'s job: inference/import_cli.py adds it.)"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cdface.cli_args import positive_int, subcommands

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the `models` subcommand to the `cdface` parser."""
    parser = subparsers.add_parser(
        "models",
        help="list the registered backbones with parameter and MAC counts",
        description="List every registered backbone: parameters, GFLOPs (multiply-accumulates of one "
        "image, insightface's convention), input size, embedding size, and the other names (aliases) it "
        "answers to in configs, --arch and model cards.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--embedding-size", type=positive_int, default=512, help="embedding size to count with")
    parser.set_defaults(func=_run)
    _register_known(parser)


def _register_known(parser: argparse.ArgumentParser) -> None:
    """`cdface models known [--json]`."""
    known = subcommands(parser, dest="models_command").add_parser(
        "known",
        help="list the released checkpoints cdface recognises (architecture, training set, input, accuracy)",
        description="Released face-recognition checkpoints that load with no --arch and no preprocessing "
        "flags: each is recognised by its key layout and shapes (the classifier it ships tells training sets "
        "apart; a published sha256 names the exact file), and its input contract is then applied. Accuracy "
        "and licence notes are quoted from the releasing project's README (the source column).",
    )
    known.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    known.set_defaults(func=_run_known)


def _run(args: argparse.Namespace) -> int:
    from cdface.models.flops import model_summary
    from cdface.models.registry import list_models, model_aliases

    aliases = model_aliases()
    rows = [
        {**model_summary(name, embedding_size=args.embedding_size), "aliases": aliases.get(name, [])}
        for name in list_models()
    ]
    if args.json:
        print(json.dumps([{**row, "input_size": list(row["input_size"])} for row in rows], indent=2))
        return 0
    header = ("name", "params (M)", "GFLOPs (MACs)", "input", "embedding", "aliases")
    lines = [
        (r["name"], f"{r['params'] / 1e6:.2f}", f"{r['gflops']:.2f}", "x".join(map(str, r["input_size"])),
         str(r["embedding_size"]), ", ".join(r["aliases"]) or "-")
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    for i, line in enumerate([header, *lines]):
        print("  ".join(c.ljust(w) if j in (0, len(line) - 1) else c.rjust(w)
                        for j, (c, w) in enumerate(zip(line, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0


def _run_known(args: argparse.Namespace) -> int:
    from cdface.models.known import KNOWN_MODELS

    if args.json:
        print(json.dumps([m.as_dict() for m in KNOWN_MODELS], indent=2))
        return 0
    for m in KNOWN_MODELS:
        print(f"{m.name}\n    architecture {m.arch} ({m.layout} release), trained on {m.training_set}, embedding "
              f"{m.embedding_size}\n    input {m.contract_text()}\n    published: {m.accuracy}  [{m.source}]\n"
              f"    licence: {m.licence}")
    print(f"\n{len(KNOWN_MODELS)} releases. Other checkpoints in a known key layout (cdface models) load too, "
          "with the project's default input unless a model card says otherwise (docs/inference.md).")
    return 0
