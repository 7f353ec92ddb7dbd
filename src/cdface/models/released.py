"""The containers other projects release their face backbones in, turned into a cdface backbone's state_dict.

A released checkpoint is rarely a bare backbone state_dict: AdaFace ships a PyTorch Lightning `.ckpt`
(`{'state_dict': {'model.*': backbone, 'head.kernel', 'head.t', ...}}`), MagFace a training checkpoint whose
backbone sits under `features.module.` beside its MagLinear head `fc.weight`, facenet-pytorch a state_dict with
its classifier `logits.*`, CVLface a `model.safetensors` whose keys start with `net.`. `recognise_release`
finds which one a loaded object is, sets the classifier aside (its class count is kept: it tells the training
set apart), and returns the backbone's weights in the key names of our own module, with the architecture and,
where the release's contract is not the architecture's own, its input contract.

Layouts (each checked against the releasing project's module code, see the tests):
- "adaface": AdaFace `.ckpt` -> `adaface_ir*` (BGR, [-1, 1]).
- "magface": MagFace checkpoint -> `magface_iresnet*` (BGR, [0, 1], BN eps 2e-5).
- "facenet-pytorch": -> `inception_resnet_v1` (160x160 RGB, (x - 127.5)/128).
- "cvlface": CVLface's `net.`-prefixed IR weights -> `adaface_ir*` with CVLface's RGB [-1, 1] input.
- "transface": TransFace's `model.pt` (insightface's ViT keys plus its patch gate `senet.*`) -> `transface_*`.
Anything else (insightface, face.evoLVe, cdface's own files, and TFace / ElasticFace / CurricularFace
releases, which use those key layouts) is left to `cdface.models.infer_model_config`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from cdface.models.iresnet import IRESNET_LAYERS
from cdface.models.loading import infer_model_config, strip_wrapper_prefixes

__all__ = ["ReleasedWeights", "recognise_release", "CONTAINER_KEYS", "CVLFACE_INPUT_CFG"]

# where a checkpoint keeps its weights: cdface / insightface ("backbone", "state_dict_backbone"), Lightning,
# MagFace and most training scripts ("state_dict"), and others ("model")
CONTAINER_KEYS = ("backbone", "state_dict_backbone", "state_dict", "model")
_MAGFACE_DEPTHS = {layers: int(name.removeprefix("iresnet")) for name, layers in IRESNET_LAYERS.items()
                   if name != "iresnet200"}
_IRESNET_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.conv1\.weight$")
# CVLface's IResNetModel: ToTensor + Normalize(0.5, 0.5) on RGB (models/iresnet/__init__.py, color_space RGB)
CVLFACE_INPUT_CFG = {"input_size": (112, 112), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "color": "RGB"}


@dataclass
class ReleasedWeights:
    """A backbone found in another project's release container.

    layout: "adaface" | "magface" | "facenet-pytorch" | "cvlface".
    state_dict: the backbone's tensors in our module's key names.
    config: {"arch", "embedding_size", "model_kwargs"} for `create_model`.
    input_cfg: the release's input contract when it differs from the architecture's own, else None.
    set_aside: "key (shape)" of each tensor not used (classifier heads and their buffers).
    head_classes: the classifier's class count, when the release keeps it (a clue to the training set).
    """

    layout: str
    state_dict: dict[str, Tensor]
    config: dict[str, Any]
    input_cfg: dict[str, Any] | None = None
    set_aside: list[str] = field(default_factory=list)
    head_classes: int | None = None


def _tensor_dict(obj: Any) -> dict[str, Tensor] | None:
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        return dict(obj)
    return None


def _candidates(obj: Any) -> list[dict[str, Tensor]]:
    """The object itself when it is a state_dict, then each state_dict a checkpoint keeps under a known key."""
    found = [d for d in [_tensor_dict(obj)] if d is not None]
    if isinstance(obj, Mapping):
        found += [d for d in (_tensor_dict(obj.get(k)) for k in CONTAINER_KEYS) if d is not None]
    return found


def _shape_text(value: Tensor) -> str:
    return "x".join(map(str, value.shape)) or "scalar"


def recognise_release(obj: Any) -> ReleasedWeights | None:
    """The backbone inside `obj` (what `torch.load` or safetensors returned) if it is one of the release layouts
    above, else None (a plain or cdface state_dict is not a "release layout": the caller handles it)."""
    for state in _candidates(obj):
        state = strip_wrapper_prefixes(state)
        for recognise in (_adaface, _magface, _facenet, _cvlface, _transface):
            found = recognise(state)
            if found is not None:
                return found
    return None


def _split(state: dict[str, Tensor], prefix: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    inside = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return inside, {k: v for k, v in state.items() if not k.startswith(prefix)}


def _adaface(state: dict[str, Tensor]) -> ReleasedWeights | None:
    """AdaFace `.ckpt`: `model.*` (the backbone) and `head.*` (the AdaFace head: `kernel` (512, classes) and the
    buffers `t`, `batch_mean`, `batch_std`), nothing else."""
    backbone, rest = _split(state, "model.")
    if not backbone or any(not k.startswith("head.") for k in rest):
        return None
    config = infer_model_config(backbone)
    if config is None or not config["arch"].startswith("adaface_"):
        return None
    kernel = rest.get("head.kernel")
    return ReleasedWeights(
        "adaface", backbone, config, None, [f"{k} ({_shape_text(v)})" for k, v in rest.items()],
        int(kernel.shape[1]) if kernel is not None and kernel.ndim == 2 else None,
    )


def _magface(state: dict[str, Tensor]) -> ReleasedWeights | None:
    """MagFace: the backbone under `features.` (`features.module.` when trained with DDP) and its MagLinear
    head `fc.weight` (embedding, classes) beside it; `inference/network_inf.py` reads it the same way."""
    backbone, rest = _split(state, "features.")
    if not backbone or any(not k.startswith("fc.") for k in rest):
        return None
    backbone = strip_wrapper_prefixes(backbone)
    if "conv1.weight" not in backbone or "features.running_mean" not in backbone:
        return None
    blocks = [0, 0, 0, 0]
    widths = [0, 0, 0, 0]
    for key, value in backbone.items():
        match = _IRESNET_BLOCK.match(key)
        if match:
            stage, index = int(match.group(1)) - 1, int(match.group(2))
            blocks[stage] = max(blocks[stage], index + 1)
            widths[stage] = int(value.shape[0])
    depth = _MAGFACE_DEPTHS.get(tuple(blocks))
    fc = backbone.get("fc.weight")
    if depth is None or fc is None or fc.ndim != 2:
        return None
    kwargs = {} if widths == [64, 128, 256, 512] else {"widths": tuple(widths)}
    config = {"arch": f"magface_iresnet{depth}", "embedding_size": int(fc.shape[0]), "model_kwargs": kwargs}
    head = rest.get("fc.weight")
    return ReleasedWeights(
        "magface", backbone, config, None, [f"{k} ({_shape_text(v)})" for k, v in rest.items()],
        int(head.shape[1]) if head is not None and head.ndim == 2 else None,
    )


def _facenet(state: dict[str, Tensor]) -> ReleasedWeights | None:
    """facenet-pytorch: InceptionResnetV1's keys, with the classifier `logits.{weight,bias}` (classes, 512) that
    both releases keep (without it, a bare InceptionResnetV1 state_dict, e.g. one cdface trained, is no release)."""
    backbone = {k: v for k, v in state.items() if not k.startswith("logits.")}
    if "conv2d_1a.conv.weight" not in backbone or "logits.weight" not in state:
        return None
    config = infer_model_config(backbone)
    if config is None or config["arch"] != "inception_resnet_v1":
        return None
    logits = state.get("logits.weight")
    set_aside = [f"{k} ({_shape_text(v)})" for k, v in state.items() if k.startswith("logits.")]
    return ReleasedWeights("facenet-pytorch", backbone, config, None, set_aside,
                           int(logits.shape[0]) if logits is not None and logits.ndim == 2 else None)


def _cvlface(state: dict[str, Tensor]) -> ReleasedWeights | None:
    """CVLface: `IResNetModel.state_dict()`, the AdaFace IR under `net.` (hub `model.safetensors`), RGB input."""
    backbone, rest = _split(state, "net.")
    if not backbone or rest:
        return None
    config = infer_model_config(backbone)
    if config is None or not config["arch"].startswith("adaface_"):
        return None
    return ReleasedWeights("cvlface", backbone, config, dict(CVLFACE_INPUT_CFG))


def _transface(state: dict[str, Tensor]) -> ReleasedWeights | None:
    """TransFace: a plain state_dict, insightface's ViT keys plus `senet.{0,2}.weight` (RGB [-1, 1] input)."""
    if "senet.0.weight" not in state:
        return None
    config = infer_model_config(state)
    if config is None or not config["arch"].startswith("transface_"):
        return None
    return ReleasedWeights("transface", state, config)
