"""`cdface models import FILE.onnx --arch NAME --out backbone.pt`: added to models/'s `cdface models` command
here, since importing runs the graph with onnxruntime to check the mapped backbone (inference/'s loading)."""

from __future__ import annotations

import argparse
import json

from cdface.cli_args import positive_int, subcommand_parser, subcommands

__all__ = ["register_models_import"]


def register_models_import(subparsers: argparse._SubParsersAction) -> None:
    """Add `import` under the registered `cdface models` command."""
    imp = subcommands(subcommand_parser(subparsers, "models"), dest="models_command").add_parser(
        "import",
        help="turn an ONNX recognition model into a trainable backbone (backbone.pt + model.json)",
        description="Map an ONNX graph's weights onto one of cdface's architectures (IResNet / IR / "
        "MobileFaceNet as torch.onnx.export writes them, e.g. insightface's w600k_r50.onnx: BatchNorms folded "
        "into convolutions are restored as identities), check that both give the same embeddings on random "
        "faces, and write a plain state_dict with its model card (model.json beside backbone.pt, else "
        "<stem>.json). A graph of another architecture is refused in one line saying where it differs.",
    )
    imp.add_argument("onnx", metavar="FILE.onnx", help="the ONNX model")
    imp.add_argument("--arch", required=True, help="the architecture it is (see cdface models), e.g. iresnet50")
    imp.add_argument("--out", required=True, help="the state_dict to write (or a folder: backbone.pt + model.json)")
    imp.add_argument("--embedding-size", type=positive_int, help="default: the graph's output size")
    imp.set_defaults(func=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from cdface.inference.onnx_import import import_onnx

    report = import_onnx(args.onnx, args.arch, args.out, embedding_size=args.embedding_size)
    print(json.dumps(report.to_dict(), indent=2))
    return 0
