"""Inference: load a face model from any format, embed aligned faces, export to ONNX, search, evaluate.

`FaceEmbedder` and `compare` are the everyday entry points (also reachable as `cdface.FaceEmbedder`,
`cdface.compare`); `evaluate_model` / `verify_pairs` run the protocols end to end.
"""

from __future__ import annotations

from cdface.inference.embedder import FaceEmbedder, compare, l2_normalize
from cdface.inference.evaluate import evaluate_model, evaluate_models
from cdface.inference.export import ExportReport, export_onnx
from cdface.inference.loading import EmbeddingModel, load_embedding_model
from cdface.inference.pairs_target import verify_pairs
from cdface.inference.results import TargetResult
from cdface.inference.search import topk_search

__all__ = [
    "FaceEmbedder",
    "compare",
    "l2_normalize",
    "EmbeddingModel",
    "load_embedding_model",
    "export_onnx",
    "ExportReport",
    "topk_search",
    "evaluate_model",
    "evaluate_models",
    "verify_pairs",
    "TargetResult",
]
