"""Export a backbone to ONNX and prove the file computes what PyTorch computes.

The graph takes the *normalised* float input (N, 3, H, W) like insightface's exported models; its
preprocessing (size, mean/std, colour) is written beside it as `<stem>.json`, which `load_embedding_model`
reads back. The TorchScript exporter (`dynamo=False`) is used because it needs no extra package and handles
every cdface backbone; the torch.export-based exporter is the fallback where the former is unavailable.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cdface.errors import CdfaceError, ConfigError
from cdface.inference.input_config import write_model_json
from cdface.inference.loading import TorchEmbeddingModel, load_embedding_model

__all__ = ["ExportError", "ExportReport", "export_onnx"]

_INPUT_NAME, _OUTPUT_NAME = "input", "embedding"


@dataclass
class ExportReport:
    """What was written and how closely onnxruntime matched PyTorch (fp32 reference) on random inputs."""

    path: str
    json_path: str
    opset: int
    dynamic_batch: bool
    fp16: bool
    input_shape: list[int | str]
    output_shape: list[int | str]
    max_abs_diff: float
    tolerance: float
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _FirstOutput(nn.Module):
    """Backbones that return (embedding, extra) export only the embedding."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        out = self.module(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def export_onnx(
    model: nn.Module | TorchEmbeddingModel | str | Path,
    out_path: str | Path,
    opset: int = 17,
    dynamic_batch: bool = False,
    fp16: bool = False,
    check: bool = True,
    check_batch: int = 2,
    **load_kwargs: Any,
) -> ExportReport:
    """Export to `out_path`, write `<stem>.json`, and compare with PyTorch via onnxruntime.

    A fixed-batch export has batch 1 (what most runtimes expect); `dynamic_batch` makes the batch symbolic.
    `fp16` stores weights and I/O in float16. Tolerance on max |onnx - torch|: 1e-4 (fp32) or 2e-2 (fp16),
    times max(1, max |output|). `model` may be a module, an embedding model, or any path
    `load_embedding_model` reads (with `load_kwargs`).
    """
    if isinstance(model, nn.Module):
        model = load_embedding_model(model, **load_kwargs)  # stays on its device; a CPU copy is exported
    elif not isinstance(model, TorchEmbeddingModel):
        model = load_embedding_model(model, device="cpu", **load_kwargs)
    if not isinstance(model, TorchEmbeddingModel):
        raise ConfigError(f"{model.source_path}: only PyTorch models can be exported to ONNX (it is ONNX already)")
    module = _FirstOutput(copy.deepcopy(model.module)).cpu().float().eval()
    height, width = model.input_cfg["input_size"]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    dtype = torch.float16 if fp16 else torch.float32
    export_module = copy.deepcopy(module).to(dtype) if fp16 else module
    dummy = torch.randn(1, 3, height, width, dtype=dtype)
    _run_exporter(export_module, dummy, out_path, opset, dynamic_batch)

    embedding_size = _graph_output_size(out_path)
    json_path = write_model_json(
        out_path.with_suffix(".json"),
        model.input_cfg,
        arch=model.arch,
        embedding_size=embedding_size,
        model_kwargs=dict(getattr(model.module, "model_kwargs", {}) or {}),
        format="onnx",
        opset=opset,
        dynamic_batch=dynamic_batch,
        fp16=fp16,
    )
    batch: int | str = "batch" if dynamic_batch else 1
    report = ExportReport(
        path=str(out_path),
        json_path=str(json_path),
        opset=opset,
        dynamic_batch=dynamic_batch,
        fp16=fp16,
        input_shape=[batch, 3, height, width],
        output_shape=[batch, embedding_size],
        max_abs_diff=float("nan"),
        tolerance=float("nan"),
        ok=True,
    )
    if check:
        report.max_abs_diff, report.tolerance = _compare_with_torch(
            module, out_path, (height, width), check_batch if dynamic_batch else 1, fp16
        )
        report.ok = bool(report.max_abs_diff <= report.tolerance)
    return report


def _run_exporter(module: nn.Module, dummy: Tensor, out_path: Path, opset: int, dynamic_batch: bool) -> None:
    """Run the exporter with the process's stderr held back: on failure the TorchScript exporter prints the
    whole traced graph there (hundreds of lines) before raising. A failure becomes one ExportError line."""
    try:
        with _stderr_held():
            _export(module, dummy, out_path, opset, dynamic_batch)
    except Exception as exc:  # the exporters raise many untyped errors (RuntimeError, OnnxExporterError, ...)
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        dtype = "float16" if dummy.dtype == torch.float16 else "float32"
        raise ExportError(
            f"{out_path}: ONNX export of {type(_unwrapped(module)).__name__} at opset {opset} ({dtype}) failed: "
            f"{type(exc).__name__}: {first[:300]}"
        ) from None


class ExportError(CdfaceError):
    """The exporter could not turn the model into an ONNX graph (one line: model, opset, precision, cause)."""


def _unwrapped(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, _FirstOutput) else module


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """Point file descriptor 2 at a temporary file for the block (C++ code writes there, not to sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield None
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _export(module: nn.Module, dummy: Tensor, out_path: Path, opset: int, dynamic_batch: bool) -> None:
    dynamic_axes = {_INPUT_NAME: {0: "batch"}, _OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    kwargs: dict[str, Any] = {
        "input_names": [_INPUT_NAME],
        "output_names": [_OUTPUT_NAME],
        "opset_version": opset,
        "do_constant_folding": True,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation on every call
        try:
            torch.onnx.export(module, (dummy,), str(out_path), dynamo=False, dynamic_axes=dynamic_axes, **kwargs)
        except (TypeError, NotImplementedError):  # a torch without the TorchScript exporter
            shapes = {"x": {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
            torch.onnx.export(module, (dummy,), str(out_path), dynamo=True, dynamic_shapes=shapes, **kwargs)


def _graph_output_size(path: Path) -> int:
    """The embedding size from the exported graph's output shape (no extra forward pass)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return int(graph.output[0].type.tensor_type.shape.dim[-1].dim_value)


def _compare_with_torch(
    module: nn.Module, path: Path, size: tuple[int, int], batch: int, fp16: bool
) -> tuple[float, float]:
    """max |onnxruntime - torch fp32| on seeded normal inputs (the scale of normalised images)."""
    import onnxruntime as ort

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *size, generator=generator)
    with torch.inference_mode():
        ref = module(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = x.numpy().astype(np.float16 if fp16 else np.float32)
    got = np.asarray(session.run(None, {session.get_inputs()[0].name: feed})[0], dtype=np.float32)
    diff = float(np.abs(got - ref).max())
    tolerance = (2e-2 if fp16 else 1e-4) * max(1.0, float(np.abs(ref).max()))
    return diff, tolerance
