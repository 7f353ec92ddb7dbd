"""Load a face model from any format into one callable: uint8 RGB images in, float32 embeddings out.

Sources: an `nn.Module`; a cdface run directory (`backbone.pt` + `model.json`); a cdface checkpoint (dict with
"backbone" and "config"); a plain backbone state_dict (`.pt`/`.pth`/`.safetensors`: insightface IResNet, the
paper's IR-100; architecture from `arch=`, a `model.json` beside it, or inferred from its keys); another
project's release container (AdaFace `.ckpt`, MagFace, facenet-pytorch, CVLface: `cdface.models.released`),
whose input contract comes with it and, for a known release (`cdface.models.known`), from its card; an ONNX
file (onnxruntime).
Files are read with `torch.load(weights_only=True)` only (`cdface.files.load_weights`): a pickle that wants to
build arbitrary objects is refused with UnsafeFileError, never executed. The model does its own normalisation
from its input config, so callers only ever hand over aligned uint8 crops.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cdface.errors import ConfigError, FormatError
from cdface.files import load_weights
from cdface.inference.input_config import read_model_json, resolve_input_cfg
from cdface.models.input_contract import InputContract
from cdface.precision import PRECISIONS, autocast

__all__ = [
    "EmbeddingModel",
    "TorchEmbeddingModel",
    "OnnxEmbeddingModel",
    "load_embedding_model",
    "is_onnx_file",
    "build_backbone",
    "resolve_device",
    "PRECISIONS",
]

logger = logging.getLogger("cdface.inference")

_WRAPPER_KEYS = ("backbone", "state_dict_backbone", "state_dict", "model")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> the GPU when present, else the CPU. ConfigError for a name torch does not know or a CUDA
    device on a machine without one."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda or cuda:N ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but no CUDA GPU is available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev


class EmbeddingModel:
    """Common front of every loaded model: takes (N,H,W,3) uint8 RGB, returns (N,D) float32 numpy.

    `input_cfg` = {"input_size": (H, W), "mean": (r,g,b), "std": (r,g,b), "color": "RGB"|"BGR"}, mean/std in
    0..1 units and in the model's own channel order. Images of another size are resized bilinearly.
    """

    def __init__(self, input_cfg: Mapping[str, Any], device: torch.device, source_path: Path | None) -> None:
        self.input_cfg = resolve_input_cfg(input_cfg)
        self.device = device
        self.source_path = source_path
        self.embedding_size: int | None = None
        self.arch: str | None = None
        # where the input config came from: {"source": text, "assumed": [keys taken from the default]}
        self.preprocessing: dict[str, Any] = {"source": "the model", "assumed": []}

    def preprocess(self, images: np.ndarray | Tensor) -> Tensor:
        """uint8 (N,H,W,3) RGB -> float32 (N,3,h,w) on the model's device, colour-ordered and normalised."""
        contract = InputContract.from_cfg(self.input_cfg)  # the one preprocessing training used too
        return contract(self._nchw_at_input_size(images))

    def _nchw_at_input_size(self, images: np.ndarray | Tensor) -> Tensor:
        """uint8 (N,H,W,3) RGB -> (N,3,h,w) RGB on the device at the input size (uint8, or float 0..255 when
        it had to be resized)."""
        x = torch.from_numpy(_writable(images)) if isinstance(images, np.ndarray) else torch.as_tensor(images)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected images of shape (N, H, W, 3), got {tuple(x.shape)}")
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        size = tuple(self.input_cfg["input_size"])
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)
        return x

    def __call__(self, images: np.ndarray | Tensor) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.embedding_size or 0), dtype=np.float32)
        return self.forward_normalized(self.preprocess(images))

    def forward_normalized(self, x: Tensor) -> np.ndarray:
        """Run the network on already-normalised (N,3,H,W) float input."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Provenance: where the model came from and how its input is prepared."""
        info = {
            "source": str(self.source_path) if self.source_path else None,
            "arch": self.arch,
            "embedding_size": self.embedding_size,
            "input_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in self.input_cfg.items()},
            "preprocessing": dict(self.preprocessing),
            "precision": self._precision_text(),
        }
        release = getattr(getattr(self, "module", None), "release_card", None)
        if release:  # another project's release: which one, and so whose input contract the model carries
            info["release"] = release
        return info

    def _precision_text(self) -> str:
        """The precision the model really runs at (autocast for PyTorch, the graph's input type for ONNX)."""
        if hasattr(self, "input_dtype"):
            return f"onnx graph ({np.dtype(self.input_dtype).name} input)"
        return str(getattr(self, "precision", "fp32"))


def _writable(images: np.ndarray) -> np.ndarray:
    """Contiguous and writable (torch refuses read-only memory such as memmaps or broadcast views)."""
    images = np.ascontiguousarray(images)
    return images if images.flags.writeable else images.copy()


class TorchEmbeddingModel(EmbeddingModel):
    """A PyTorch backbone. Live training modules are put in eval mode only for the call, then restored."""

    def __init__(
        self,
        module: nn.Module,
        input_cfg: Mapping[str, Any],
        device: torch.device | None = None,
        precision: str = "fp32",
        source_path: Path | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if device is None:
            param = next(module.parameters(), None)
            device = param.device if param is not None else resolve_device(None)
        super().__init__(input_cfg, device, source_path)
        self.module = module.to(device)
        self.precision = precision
        self.arch = getattr(module, "arch", None)

    def forward_normalized(self, x: Tensor) -> np.ndarray:
        with self._eval_mode(), torch.inference_mode(), self._autocast():
            out = self.module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]  # some backbones return (embedding, norm)
        out = out.float().cpu().numpy()
        self.embedding_size = out.shape[1]
        return out

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        was_training = self.module.training
        self.module.eval()
        try:
            yield
        finally:
            self.module.train(was_training)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.precision, self.device)


class OnnxEmbeddingModel(EmbeddingModel):
    """An ONNX model under onnxruntime. Input name, element type (float32/16/64 or uint8), layout (NCHW or NHWC),
    channels (3, or 1 for grey models), size, a fixed batch, and a normalisation the graph does itself are read
    from the graph (`cdface.inference.onnx_input`); a graph that cannot be fed is a one-line FormatError."""

    def __init__(self, path: Path, input_cfg: Mapping[str, Any], device: torch.device) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("ONNX models need onnxruntime: pip install 'cdface[onnx]'") from exc
        from cdface.inference.onnx_input import read_onnx_input

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            raise FormatError(path, None, f"a valid ONNX model ({exc})") from exc
        self.graph_input = read_onnx_input(path, self.session)
        self.input_name = self.graph_input.name
        self.channels_last = self.graph_input.channels_last
        self.fixed_batch = self.graph_input.fixed_batch
        self.input_dtype = self.graph_input.dtype
        cfg = dict(input_cfg)
        if self.graph_input.size is not None:
            cfg["input_size"] = self.graph_input.size
        super().__init__(cfg, torch.device("cpu"), path)
        outputs = self.session.get_outputs()
        out_shape = list(outputs[0].shape or [])
        _check_embedding_outputs(path, outputs, self.graph_input)
        self.embedding_size = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None

    def preprocess(self, images: np.ndarray | Tensor) -> Tensor:
        """uint8 (N,H,W,3) RGB -> (N,C,h,w) as the graph takes it: colour-ordered, grey for a 1-channel graph
        (ITU-R 601 luma rounded to integers, as PIL's and OpenCV's grey conversion), then uint8 pixels for a
        uint8 graph, the pixels as floats when the input config is mean 0 / std 1/255, else (x/255 - mean)/std."""
        cfg = self.input_cfg
        grey = self.graph_input.channels == 1
        if not grey and not self.graph_input.is_uint8 and not _is_pixel_cfg(cfg):
            return super().preprocess(images)  # the InputContract path, bit for bit what training applies
        x = self._nchw_at_input_size(images)
        if cfg["color"] == "BGR" and not grey:
            x = x.flip(1)
        x = x.float()
        if grey:  # luma weights in R, G, B order
            x = (x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114).round_()
        if self.graph_input.is_uint8:
            return x.round_().clamp_(0, 255).to(torch.uint8)
        if _is_pixel_cfg(cfg):
            return x
        mean, std = cfg["mean"][0], cfg["std"][0]  # a grey graph: one value (a card may give one or three)
        return x.div_(255.0).sub_(mean).div_(std)

    def forward_normalized(self, x: Tensor) -> np.ndarray:
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        arr = x.contiguous().cpu().numpy().astype(self.input_dtype, copy=False)
        step = self.fixed_batch or len(arr)
        outs = []
        for start in range(0, len(arr), step):
            chunk = arr[start : start + step]
            n = len(chunk)
            if n < step:  # a fixed-batch graph: pad the last chunk, drop the padding's outputs
                chunk = np.concatenate([chunk, np.zeros((step - n, *chunk.shape[1:]), chunk.dtype)])
            out = self.session.run(None, {self.input_name: chunk})[0]
            outs.append(np.asarray(out, dtype=np.float32).reshape(step, -1)[:n])
        return np.concatenate(outs)


def _check_embedding_outputs(path: Path, outputs: Sequence[Any], graph_input: Any) -> None:
    """Refuse a graph that is not an embedding model before it is run: its first output must be (N, D) (sizes of
    1 beside D allowed, e.g. (N, D, 1, 1)), and a graph with 5 or more outputs is a detector (the rule
    insightface's `model_zoo` router uses). Otherwise a face detector given as --model was run and its score map
    flattened into an "embedding"."""
    shape = list(outputs[0].shape or [])
    feature_dims = [d for d in shape[1:] if d != 1]
    if len(outputs) < 5 and len(feature_dims) <= 1:
        return
    shown = ", ".join(f"{o.name} {list(o.shape or [])}" for o in outputs[:3]) + (", ..." if len(outputs) > 3 else "")
    raise FormatError(
        path, None,
        f"an embedding model, one output (N, D); this graph (input {list(graph_input.shape)}) has {len(outputs)} "
        f"output(s): {shown}, not an embedding (a face detector goes to --detect FILE.onnx, not to --model)",
    )


def _is_pixel_cfg(cfg: Mapping[str, Any]) -> bool:
    """mean 0 and std 1/255: (x/255 - 0)/(1/255) is x itself, fed exactly instead of through two roundings."""
    from cdface.inference.onnx_input import PIXEL_STD

    return all(m == 0 for m in cfg["mean"]) and all(abs(v / PIXEL_STD - 1) < 1e-6 for v in cfg["std"])


# ----------------------------------------------------------------------------------------------- loading


_TRAINING_ONLY_OPTIONS = ("fp16", "bf16", "gradient_checkpointing", "channels_last")


def load_embedding_model(
    path_or_module: str | Path | nn.Module | EmbeddingModel,
    arch: str | None = None,
    device: str | torch.device | None = None,
    input_mean: tuple[float, float, float] | None = None,
    input_std: tuple[float, float, float] | None = None,
    bgr: bool | None = None,
    embedding_size: int | None = None,
    precision: str = "fp32",
    model_kwargs: Mapping[str, Any] | None = None,
    fallback_input: Mapping[str, Any] | None = None,
) -> EmbeddingModel:
    """Load any supported model source into an EmbeddingModel (see the module docstring for the sources).

    `input_mean`/`input_std` (0..1 units) and `bgr` override the input config found with the model.
    `fallback_input` ({"mean", "std", "bgr"}, values or None) fills only the values the model does not give
    itself (no model card, no normalisation inside an ONNX graph, the project default otherwise): `cdface eval`
    passes its --input-mean/--input-std/--bgr this way, so that each model keeps its own card. Where each value
    came from is in `model.preprocessing["values_from"]`. `device=None` picks the GPU when present.
    """
    overrides = {"mean": input_mean, "std": input_std, "bgr": bgr}
    fallback = {k: v for k, v in (fallback_input or {}).items() if v is not None}
    if isinstance(path_or_module, EmbeddingModel):
        return path_or_module
    if isinstance(path_or_module, nn.Module):
        own = getattr(path_or_module, "input_cfg", None)
        cfg, preprocessing = _apply_fallback(resolve_input_cfg(own, **overrides), own, {}, overrides, fallback,
                                             type(path_or_module).__name__,
                                             bool(getattr(path_or_module, "release_card", None)))
        dev = None if device is None else resolve_device(device)
        model = TorchEmbeddingModel(path_or_module, cfg, dev, precision)
        model.preprocessing = preprocessing
        return model
    path = Path(path_or_module)
    dev = resolve_device(device)
    if path.is_dir():
        path = _model_file_in_dir(path)
    if not path.is_file():
        raise FormatError(path, None, "a model file or run directory (not found)")
    meta = _find_model_json(path)
    if is_onnx_file(path):
        if precision != "fp32":  # autocast does not reach onnxruntime: say so instead of recording a lie
            logger.warning(
                "%s: --precision %s is ignored for an ONNX model, which runs in its graph's own precision "
                "(cdface export --fp16 writes a float16 graph)", path, precision,
            )
        model = OnnxEmbeddingModel(path, resolve_input_cfg(meta), dev)
        model.arch = meta.get("arch") if meta else None
        cfg, model.preprocessing = _onnx_input_cfg(path, model.graph_input, meta, overrides, fallback)
        model.input_cfg = resolve_input_cfg(model.input_cfg, cfg)
        _warn_assumed(path, model.preprocessing, model.input_cfg)
        declared = meta.get("input_size") if meta else None
        if declared and tuple(int(v) for v in declared) != tuple(model.input_cfg["input_size"]):
            logger.warning(
                "%s: its model card declares input size %s but the graph takes %s; using the graph's",
                path, "x".join(map(str, declared)), "x".join(map(str, model.input_cfg["input_size"])),
            )
        return model
    obj = load_weights(path, "a PyTorch state_dict or checkpoint readable by torch.load")
    module = build_backbone(obj, path, arch, embedding_size, meta, model_kwargs)
    cfg = resolve_input_cfg(getattr(module, "input_cfg", None), meta, **overrides)
    cfg, preprocessing = _apply_fallback(cfg, getattr(module, "input_cfg", None), meta, overrides, fallback, path,
                                         bool(getattr(module, "release_card", None)))
    module.eval()
    model = TorchEmbeddingModel(module, cfg, dev, precision, source_path=path)
    model.preprocessing = preprocessing
    return model


def is_onnx_file(path: Path) -> bool:
    """An .onnx name, or an ONNX file under another name (``cdface export --out r50`` writes no suffix): a
    serialised ModelProto starts with field 1, ir_version (tag byte 0x08), while a torch.save file is a zip
    (``PK``) or a pickle (0x80)."""
    if path.suffix.lower() == ".onnx":
        return True
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x08"


_OVERRIDE_FLAGS = {"mean": "--input-mean", "std": "--input-std", "color": "--bgr"}
_PREPROCESSING_KEYS = ("mean", "std", "color")
_FROM_FLAG, _FROM_FALLBACK = "command line", "command line (for a model without its own)"


def _given(values: Mapping[str, Any]) -> dict[str, Any]:
    """{"mean", "std", "bgr"} loader keywords -> input-config keys ("bgr" -> "color"), the given ones only."""
    out = {k: values[k] for k in ("mean", "std") if values.get(k) is not None}
    if values.get("bgr") is not None:
        out["color"] = "BGR" if values["bgr"] else "RGB"
    return out


def _apply_fallback(
    cfg: Mapping[str, Any],
    own: Mapping[str, Any] | None,
    meta: Mapping[str, Any],
    overrides: Mapping[str, Any],
    fallback: Mapping[str, Any],
    source: object = "model",
    released: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A PyTorch model's input config with `fallback` filled in where neither the card (`meta`) nor the
    module's own contract (`own`) gives a value; and the record of where each value came from.

    The module has its own contract when it comes from a recognised release (`released`) or when any of its
    mean / std / colour differs from the project default (its architecture set it): then all three are its
    own, including those that happen to equal the default (AdaFace's 0.5 beside its BGR, facenet-pytorch's
    mean 0.5 beside its std 128/255); filling those from the flags would mix two contracts."""
    given, spare = _given(overrides), _given(fallback)
    default, own_cfg = resolve_input_cfg(), resolve_input_cfg(own)
    has_own = bool(own) and (released or any(own_cfg[k] != default[k] for k in _PREPROCESSING_KEYS))
    values_from: dict[str, str] = {"input_size": "model card" if meta.get("input_size") else "the model"}
    filled: dict[str, Any] = {}
    for key in _PREPROCESSING_KEYS:
        if key in given:
            values_from[key] = _FROM_FLAG
        elif meta.get(key) is not None:
            values_from[key] = "model card"
        elif has_own:
            values_from[key] = "the model"  # its architecture's (or a recognised release's) contract
        elif key in spare:
            filled[key], values_from[key] = spare[key], _FROM_FALLBACK
        else:
            values_from[key] = "the model" if own else "default"
    out = resolve_input_cfg(cfg, filled)
    sources = list(dict.fromkeys(values_from[k] for k in _PREPROCESSING_KEYS))
    info = {"source": " + ".join(sources), "assumed": [], "values_from": values_from}
    ignored = {k: v for k, v in spare.items() if values_from[k] != _FROM_FALLBACK}
    if ignored:
        info["not_applied"] = _not_applied_note(ignored, values_from, source)
    return out, info


def _not_applied_note(
    ignored: Mapping[str, Any], values_from: Mapping[str, str], source: object
) -> dict[str, str]:
    """What `fallback_input` left out, said once as a warning (cdface eval: each model keeps its own card)."""
    notes = {k: f"{_OVERRIDE_FLAGS[k]} not applied: the value comes from {values_from[k]}" for k in ignored}
    logger.warning("%s: %s (to set this model's own, append it to its --model: PATH:mean=C1,C2,C3:"
                   "std=C1,C2,C3:color=BGR)", source, "; ".join(notes.values()))
    return notes


def _onnx_input_cfg(
    path: Path, graph_input: Any, meta: Mapping[str, Any], overrides: Mapping[str, Any],
    fallback: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An ONNX model's mean / std / colour, key by key: the command line, else the model card (`<stem>.json`),
    else the graph itself (a uint8 input, or normalisation in its first nodes: `cdface.inference.onnx_input`),
    else `fallback`, else the project default (assumed, and said so by `_warn_assumed`).

    Returns (the input-config layer, the preprocessing record: source, assumed keys, values_from per key, what
    was not applied). ConfigError when --input-mean/--input-std are asked of a uint8 graph (it takes pixels).
    """
    given, spare = _given(overrides), _given(fallback)
    inner = graph_input.inner
    graph_values: dict[str, Any] = {}
    graph_text = ""
    if graph_input.is_uint8:
        if "mean" in given or "std" in given:
            raise ConfigError(
                f"{path}: --input-mean/--input-std cannot apply: its input {graph_input.name!r} is uint8 "
                f"{list(graph_input.shape)}, so the graph takes the pixels as they are and normalises them itself"
            )
        graph_values = {"mean": (0.0,) * 3, "std": (1.0 / 255.0,) * 3}
        graph_text = "the graph (uint8 input: fed the pixels)"
        card = {k: meta[k] for k in ("mean", "std") if meta.get(k) is not None}
        if card and not _is_pixel_cfg(resolve_input_cfg(card)):
            logger.warning("%s: the model card's mean/std are ignored: the graph's input is uint8 (the pixels as "
                           "they are)", path)
        meta = {k: v for k, v in meta.items() if k not in ("mean", "std")}
    elif inner is not None:
        graph_values = {"mean": inner.mean, "std": inner.std}
        graph_text = f"the graph ({inner.describe()})"
    cfg: dict[str, Any] = {}
    values_from: dict[str, str] = {}
    if graph_input.size is not None:
        values_from["input_size"] = "the graph"
    elif meta.get("input_size"):
        values_from["input_size"], cfg["input_size"] = "model card", meta["input_size"]
    else:
        values_from["input_size"] = "default"
    assumed = []
    for key in _PREPROCESSING_KEYS:
        if key == "color" and graph_input.channels == 1:
            values_from[key] = "the graph (1 channel: grey)"
        elif key in given:
            cfg[key], values_from[key] = given[key], _FROM_FLAG
        elif meta.get(key) is not None:
            cfg[key], values_from[key] = meta[key], "model card"
            if key in graph_values and not np.allclose(resolve_input_cfg({key: meta[key]})[key], graph_values[key]):
                logger.warning("%s: the model card's %s overrides what the graph implies (%s)", path, key, graph_text)
        elif key in graph_values:
            cfg[key], values_from[key] = graph_values[key], graph_text
        elif key in spare:
            cfg[key], values_from[key] = spare[key], _FROM_FALLBACK
        elif key == "color" and graph_values:
            # a graph that takes pixels says nothing of their order; insightface's loader feeds such graphs RGB
            values_from[key] = "RGB, insightface's convention for graphs that take pixels (the graph cannot say)"
        else:
            values_from[key] = "default (assumed)"
            assumed.append(key)
    sources = [s for s in ("model card", _FROM_FLAG, _FROM_FALLBACK) if s in values_from.values()]
    if graph_text and graph_text in values_from.values():
        sources.append("the graph")
    info: dict[str, Any] = {"source": " + ".join(sources) or "assumed (no model card)", "assumed": assumed,
                            "values_from": values_from}
    if graph_text:
        info["graph"] = graph_text
    ignored = {k: v for k, v in spare.items() if values_from.get(k) != _FROM_FALLBACK}
    if ignored:
        info["not_applied"] = _not_applied_note(ignored, values_from, path)
    return cfg, info


def _warn_assumed(path: Path, info: dict[str, Any], cfg: Mapping[str, Any]) -> None:
    """Warn (and note in `info`) when some of an ONNX model's normalisation is only the project default: an
    ONNX graph carries no normalisation, so without its card (`<stem>.json`) the mean, std and colour order are
    a guess: third-party models use ImageNet statistics, [0, 1], or BGR as often as [-1, 1] RGB."""
    assumed = info["assumed"]
    if not assumed:
        return
    values = ", ".join(
        f"{k} {','.join(f'{v:g}' for v in cfg[k])}" if k != "color" else f"colour {cfg['color']}" for k in assumed
    )
    flags = " ".join(f"{_OVERRIDE_FLAGS[k]}{'' if k == 'color' else ' C1,C2,C3'}" for k in assumed)
    info["note"] = (
        f"no model card ({path.with_suffix('.json').name} or model.json) gives the preprocessing: assumed "
        f"{values}, i.e. (x/255 - mean)/std. If the model was trained otherwise pass {flags} (ImageNet "
        "statistics: --input-mean 0.485,0.456,0.406 --input-std 0.229,0.224,0.225), or write the card"
    )
    logger.warning("%s: %s", path, info["note"])


def build_backbone(
    obj: Any,
    source: Path,
    arch: str | None = None,
    embedding_size: int | None = None,
    meta: Mapping[str, Any] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Turn a loaded checkpoint / state_dict into a backbone with its weights loaded strictly."""
    from cdface.models import (
        create_model,
        infer_model_config,
        load_state_dict_strict,
        nearest_layout,
        resolve_model_name,
    )
    from cdface.models.released import recognise_release

    released = recognise_release(obj)
    if released is not None:  # another project's container: its backbone, in our key names
        state_dict = released.state_dict
        config = obj["config"] if isinstance(obj, Mapping) and isinstance(obj.get("config"), Mapping) else {}
    else:
        state_dict, config = _unwrap(obj, source)
    spec = _spec_from_config(config)
    spec.update({k: v for k, v in (meta or {}).items() if k in ("arch", "embedding_size", "model_kwargs")})
    inferred = released.config if released is not None else infer_model_config(state_dict) or {}
    if not (arch or spec.get("arch")):
        spec.update(inferred)
    name = arch or spec.get("arch")
    if not name:
        raise FormatError(source, None, "a state_dict of a known architecture, pass --arch NAME (see cdface "
                          f"models); {nearest_layout(state_dict)}")
    kwargs = dict(model_kwargs if model_kwargs is not None else spec.get("model_kwargs") or {})
    for training_only in _TRAINING_ONLY_OPTIONS:  # precision is the loader's `precision`, not the card's
        kwargs.pop(training_only, None)
    size = embedding_size or spec.get("embedding_size")
    if inferred.get("arch") == resolve_model_name(name):  # keys agree with the name: trust their shapes
        size = size or inferred.get("embedding_size")
        kwargs = kwargs or dict(inferred.get("model_kwargs") or {})
    size = size or _infer_embedding_size(name, state_dict, kwargs)
    module = create_model(name, embedding_size=int(size), **kwargs)
    load_state_dict_strict(module, state_dict, str(source))
    if released is not None and module.arch != released.config["arch"]:
        # e.g. MagFace's README calls its network iresnet18: insightface's has BN eps 1e-5 and RGB [-1, 1] input
        logger.warning(
            "%s: a %s release, whose network is %s; --arch %s builds %s instead, with its own BatchNorm eps and "
            "input contract, so the embeddings differ from the release's: leave --arch out to load it as released",
            source, released.layout, released.config["arch"], name, module.arch,
        )
    if released is not None:
        _apply_release(module, released, source)
    elif module.arch.startswith("adaface_") and not (meta or {}).get("color"):
        # AdaFace's IR keys without AdaFace's container: AdaFace's own weights (BGR), or TFace's (RGB)
        logger.warning(
            "%s: a bare state_dict in AdaFace's IR layout: AdaFace's BGR input is assumed; TFace's weights in this "
            "layout take RGB: for those, write a model card with \"color\": \"RGB\" (docs/inference.md)", source,
        )
    return module


def _apply_release(module: nn.Module, released: Any, source: Path) -> None:
    """Give a backbone taken from another project's release that release's input contract (its known card
    when the file is one of `cdface models known`), and log what was set aside and what it was taken for."""
    from cdface.files import sha256_file
    from cdface.models.known import identify_known

    if released.input_cfg:
        module.input_cfg = {**module.input_cfg, **released.input_cfg}
    matches = [] if released.config.get("model_kwargs") else identify_known(  # a release has standard widths
        released.layout, module.arch, released.config["embedding_size"], released.head_classes,
        lambda: sha256_file(source))
    if matches and module.arch == matches[0].arch:
        module.input_cfg = dict(matches[0].input_cfg)
        names = " or ".join(m.name for m in matches)
        module.release_card = f"known release {names} (cdface models known)"
    else:
        module.release_card = f"{released.layout} release layout"
    if released.set_aside:
        logger.info("%s: %s; set aside (not part of the backbone): %s", source, module.release_card,
                    ", ".join(released.set_aside))


def _unwrap(obj: Any, source: Path) -> tuple[dict[str, Tensor], Mapping[str, Any]]:
    """Find the backbone's state_dict inside a checkpoint; strip DDP / compile / wrapper prefixes
    (`cdface.models.strip_wrapper_prefixes`, as init_from and resume do)."""
    from cdface.models import strip_wrapper_prefixes

    config: Mapping[str, Any] = {}
    if isinstance(obj, Mapping):
        if isinstance(obj.get("config"), Mapping):
            config = obj["config"]
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        raise FormatError(
            source,
            None,
            "a backbone state_dict (name -> tensor) or a checkpoint with a 'backbone' state_dict",
        )
    return strip_wrapper_prefixes(obj), config


def _spec_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Architecture, embedding size and kwargs from a training config (a plain dict)."""
    spec: dict[str, Any] = {}
    model = config.get("model")
    section = model if isinstance(model, Mapping) else config
    for key in ("arch", "name", "backbone", "network"):
        if isinstance(section.get(key), str):
            spec["arch"] = section[key]
            break
    if isinstance(model, str):
        spec["arch"] = model
    for source in (section, config):
        if isinstance(source.get("embedding_size"), int):
            spec["embedding_size"] = source["embedding_size"]
            break
    for key in ("model_kwargs", "kwargs"):
        if isinstance(section.get(key), Mapping):
            spec["model_kwargs"] = dict(section[key])
    return spec


def _infer_embedding_size(name: str, state_dict: Mapping[str, Tensor], kwargs: Mapping[str, Any]) -> int:
    """Build the architecture twice on the meta device with two sizes; read the size off the differing key."""
    from cdface.models import create_model

    with torch.device("meta"):
        a = create_model(name, embedding_size=512, **kwargs).state_dict()
        b = create_model(name, embedding_size=257, **kwargs).state_dict()
    for key, tensor in a.items():
        if key in state_dict and tensor.shape != b[key].shape:
            for dim, (x, y) in enumerate(zip(tensor.shape, b[key].shape)):
                if x == 512 and y == 257 and dim < state_dict[key].ndim:
                    return int(state_dict[key].shape[dim])
    return 512


def _model_file_in_dir(directory: Path) -> Path:
    """A run directory: backbone.pt, else model.onnx, else its newest checkpoint whose checksum matches (the
    rule of `resume=auto` and `init_from`: `cdface.run_files.newest_valid_checkpoint`)."""
    from cdface.run_files import list_checkpoints, newest_valid_checkpoint

    for name in ("backbone.pt", "backbone.pth", "model.onnx"):
        if (directory / name).is_file():
            return directory / name
    found = newest_valid_checkpoint(directory)  # logs each newer checkpoint it skips
    if found is not None:
        return found
    candidates = list_checkpoints(directory / "checkpoints") or list_checkpoints(directory)
    if candidates:
        raise FormatError(candidates[-1], None, "a checkpoint whose .sha256 sidecar matches, and none of the "
                          f"{len(candidates)} in the run has one (truncated or corrupt, or copied without it); "
                          "pass the checkpoint file itself to load it without the check")
    raise FormatError(directory, None, "a run directory with backbone.pt, model.onnx or checkpoints/ckpt_*.pt")


def _find_model_json(path: Path) -> dict[str, Any]:
    """`<stem>.json` or `model.json` beside the file, or in the run directory above `checkpoints/`."""
    candidates = [path.with_suffix(".json"), path.parent / "model.json"]
    if path.parent.name == "checkpoints":
        candidates.append(path.parent.parent / "model.json")
    for candidate in candidates:
        if candidate.is_file() and candidate != path:
            return read_model_json(candidate)
    return {}
