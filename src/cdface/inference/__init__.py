"""Inference: load a face model from any format, embed aligned faces, export to ONNX, search.

`FaceEmbedder` and `compare` are the everyday entry points (also reachable as `cdface.FaceEmbedder`,
`cdface.compare`). Evaluating a model on benchmarks (`cdface eval`, `evaluate_model`) is `cdface.eval`'s.
"""

from __future__ import annotations

from cdface.embedding import l2_normalize
from cdface.inference.embedder import FaceEmbedder, compare
from cdface.inference.export import ExportReport, export_onnx
from cdface.inference.loading import EmbeddingModel, load_embedding_model
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
]
