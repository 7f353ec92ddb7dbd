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
from collections.abc import Iterator, Mapping
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
        x = torch.from_numpy(_writable(images)) if isinstance(images, np.ndarray) else torch.as_tensor(images)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected images of shape (N, H, W, 3), got {tuple(x.shape)}")
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        contract = InputContract.from_cfg(self.input_cfg)  # the one preprocessing training used too
        if tuple(x.shape[-2:]) != contract.input_size:
            x = F.interpolate(x.float(), size=contract.input_size, mode="bilinear", align_corners=False)
        return contract(x)

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
    """An ONNX model under onnxruntime; input name, layout, size and a fixed batch are read from the graph."""

    def __init__(self, path: Path, input_cfg: Mapping[str, Any], device: torch.device) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("ONNX models need onnxruntime: pip install 'cdface[onnx]'") from exc
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            raise FormatError(path, None, f"a valid ONNX model ({exc})") from exc
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        shape = list(graph_input.shape)
        if len(shape) != 4:
            raise FormatError(path, f"input {graph_input.name!r}", f"a 4-D image input, got shape {shape}")
        self.channels_last = shape[1] != 3 and shape[3] == 3
        hw = shape[1:3] if self.channels_last else shape[2:4]
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.input_dtype = np.float16 if graph_input.type == "tensor(float16)" else np.float32
        graph_size = tuple(hw) if all(isinstance(v, int) and v > 0 for v in hw) else None
        cfg = dict(input_cfg)
        if graph_size is not None:
            cfg["input_size"] = graph_size
        super().__init__(cfg, torch.device("cpu"), path)
        out_shape = self.session.get_outputs()[0].shape
        self.embedding_size = out_shape[-1] if isinstance(out_shape[-1], int) else None

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
) -> EmbeddingModel:
    """Load any supported model source into an EmbeddingModel (see the module docstring for the sources).

    `input_mean`/`input_std` (0..1 units) and `bgr` override the input config found with the model;
    `device=None` picks the GPU when present.
    """
    overrides = {"mean": input_mean, "std": input_std, "bgr": bgr}
    if isinstance(path_or_module, EmbeddingModel):
        return path_or_module
    if isinstance(path_or_module, nn.Module):
        cfg = resolve_input_cfg(getattr(path_or_module, "input_cfg", None), **overrides)
        dev = None if device is None else resolve_device(device)
        return TorchEmbeddingModel(path_or_module, cfg, dev, precision)
    path = Path(path_or_module)
    dev = resolve_device(device)
    if path.is_dir():
        path = _model_file_in_dir(path)
    if not path.is_file():
        raise FormatError(path, None, "a model file or run directory (not found)")
    meta = _find_model_json(path)
    if _is_onnx(path):
        if precision != "fp32":  # autocast does not reach onnxruntime: say so instead of recording a lie
            logger.warning(
                "%s: --precision %s is ignored for an ONNX model, which runs in its graph's own precision "
                "(cdface export --fp16 writes a float16 graph)", path, precision,
            )
        model = OnnxEmbeddingModel(path, resolve_input_cfg(meta, **overrides), dev)
        model.arch = meta.get("arch") if meta else None
        model.preprocessing = _onnx_preprocessing(path, meta, overrides, model.input_cfg)
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
    module.eval()
    return TorchEmbeddingModel(module, cfg, dev, precision, source_path=path)


def _is_onnx(path: Path) -> bool:
    """An .onnx name, or an ONNX file under another name (``cdface export --out r50`` writes no suffix): a
    serialised ModelProto starts with field 1, ir_version (tag byte 0x08), while a torch.save file is a zip
    (``PK``) or a pickle (0x80)."""
    if path.suffix.lower() == ".onnx":
        return True
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x08"


_OVERRIDE_FLAGS = {"mean": "--input-mean", "std": "--input-std", "color": "--bgr"}


def _onnx_preprocessing(
    path: Path, meta: Mapping[str, Any], overrides: Mapping[str, Any], cfg: Mapping[str, Any]
) -> dict[str, Any]:
    """Where an ONNX model's normalisation came from; warns when some of it is only the project default.

    An ONNX graph carries no normalisation, so without its card (`<stem>.json`) the mean, std and colour
    order are a guess: third-party models use ImageNet statistics, [0, 1], or BGR as often as [-1, 1] RGB.
    """
    given = {"mean": overrides.get("mean"), "std": overrides.get("std"), "color": overrides.get("bgr")}
    assumed = [k for k in ("mean", "std", "color") if given[k] is None and meta.get(k) is None]
    sources = []
    if meta:
        sources.append("model card")
    if any(v is not None for v in given.values()):
        sources.append("command line")
    info: dict[str, Any] = {"source": " + ".join(sources) or "assumed (no model card)", "assumed": assumed}
    if assumed:
        values = ", ".join(
            f"{k} {','.join(f'{v:g}' for v in cfg[k])}" if k != "color" else f"colour {cfg['color']}"
            for k in assumed
        )
        flags = " ".join(f"{_OVERRIDE_FLAGS[k]}{'' if k == 'color' else ' C1,C2,C3'}" for k in assumed)
        info["note"] = (
            f"no model card ({path.with_suffix('.json').name} or model.json) gives the preprocessing: assumed "
            f"{values}, i.e. (x/255 - mean)/std. If the model was trained otherwise pass {flags} (ImageNet "
            "statistics: --input-mean 0.485,0.456,0.406 --input-std 0.229,0.224,0.225), or write the card"
        )
        logger.warning("%s: %s", path, info["note"])
    return info


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
    rule of `resume=auto` and `init_from`: `cdface.train.checkpoint.newest_valid_checkpoint`)."""
    from cdface.train.checkpoint import list_checkpoints, newest_valid_checkpoint

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
