"""`cdface models import`: an ONNX recognition model -> a trainable cdface backbone (`backbone.pt` + its card).

The weights are mapped by `cdface.models.onnx_weights.map_onnx_weights` (by structure, BatchNorms the exporter
folded restored as identities); then the graph under onnxruntime and the module under PyTorch embed the same
random uint8 faces, each fed as its loader feeds it (`load_embedding_model`), and must agree within
1e-4 x max(1, max |output|), the tolerance of `cdface export`'s check. The card (`model.json`, the same keys a
cdface run writes) gets the architecture, the embedding size and the input contract that makes the module's
input equal the graph's: the graph's card or normalisation inside (`x * a + b` in pixel units becomes
mean = -b / (255 a), std = 1 / (255 a)), else the project default, as loading the .onnx would assume.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdface.errors import CdfaceError
from cdface.files import atomic_write, atomic_writer, sha256_file

__all__ = ["ImportCheckError", "ImportReport", "import_onnx"]


@dataclass
class ImportReport:
    """What was written and how closely the module matched the graph."""

    source: str
    arch: str
    embedding_size: int
    backbone: str
    card: str
    folded_batchnorms: int
    max_abs_diff: float
    tolerance: float
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImportCheckError(CdfaceError):
    """The mapped module does not compute what the graph computes."""


def import_onnx(
    path: str | Path,
    arch: str,
    out: str | Path,
    embedding_size: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    check_images: int = 4,
) -> ImportReport:
    """Map `path`'s weights onto `arch`, check, and write `out` (a state_dict) and its card.

    The card is `model.json` beside `out` when `out` is named `backbone.pt` (a run's layout), else
    `<stem>.json`; `out` may also be a folder (then `out/backbone.pt` + `out/model.json`). Raises FormatError
    when the graph is not that architecture and ImportCheckError when the check fails (nothing is written).
    """
    from cdface.inference.loading import TorchEmbeddingModel, load_embedding_model
    from cdface.models import create_model
    from cdface.models.input_contract import resolve_input_cfg
    from cdface.models.onnx_weights import map_onnx_weights

    path = Path(path)
    graph_model = load_embedding_model(path, device="cpu")
    size = embedding_size or graph_model.embedding_size
    if not size:
        raise CdfaceError(f"{path}: the graph's output size is symbolic; pass --embedding-size")
    module = create_model(arch, embedding_size=int(size), **(model_kwargs or {}))
    input_size = tuple(graph_model.input_cfg["input_size"])
    mapping = map_onnx_weights(path, module, input_size)
    module.load_state_dict(mapping.state_dict, strict=True)
    module.eval()

    cfg = dict(graph_model.input_cfg)
    inner = graph_model.graph_input.inner
    if graph_model.graph_input.channels != 3:
        raise CdfaceError(f"{path}: a {graph_model.graph_input.channels}-channel graph; cdface backbones take 3")
    if inner is not None:  # the graph's normalisation moves into the card; a bare uint8 graph keeps 0..255
        cfg.update(_module_contract(inner))
    cfg = resolve_input_cfg(cfg)
    torch_model = TorchEmbeddingModel(module, cfg, torch.device("cpu"))
    faces = np.random.default_rng(0).integers(0, 256, size=(check_images, *input_size, 3), dtype=np.uint8)
    ref = graph_model(faces)
    got = torch_model(faces)
    diff = float(np.abs(got - ref).max())
    tolerance = 1e-4 * max(1.0, float(np.abs(ref).max()))
    if not diff <= tolerance:
        raise ImportCheckError(f"{path}: mapped onto {module.arch}, but the module's embeddings differ from the "
                               f"graph's by {diff:.3g} (> {tolerance:.3g}) on random faces; nothing written")

    folder = str(out).endswith(("/", "\\")) or Path(out).is_dir()  # Path() drops a trailing slash
    out = Path(out) / "backbone.pt" if folder else Path(out)
    card_path = out.parent / "model.json" if out.name == "backbone.pt" else out.with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(out) as handle:
        torch.save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, handle)
    card = {
        "arch": module.arch,
        "embedding_size": int(size),
        "model_kwargs": dict(getattr(module, "model_kwargs", {}) or {}),
        "input_size": list(cfg["input_size"]),
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
        "color": cfg["color"],
        "training": {"imported_from": str(path), "sha256": sha256_file(path),
                     "folded_batchnorms": mapping.folded_batchnorms,
                     "preprocessing_from": graph_model.preprocessing.get("values_from", {})},
        "evaluation": {},
    }
    atomic_write(card_path, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return ImportReport(str(path), module.arch, int(size), str(out), str(card_path), len(mapping.folded_batchnorms),
                        diff, tolerance, True)


def _module_contract(inner: Any) -> dict[str, Any]:
    """The module's (x/255 - mean)/std equal to what the graph's own normalisation gives its body (a x + b in
    pixel units): std = 1 / (255 a), mean = -b / (255 a)."""
    a, b = inner.pixel_map()
    return {"mean": tuple(float(v) for v in -b / (255.0 * a)), "std": tuple(float(v) for v in 1.0 / (255.0 * a))}
