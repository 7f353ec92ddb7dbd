"""Loading weights into registered backbones, and recognising an architecture from its state_dict.

A checkpoint of another architecture must say which keys differ (not dump a 2,000-line PyTorch error),
and `cdface eval --model x.pth` without `--arch` needs the architecture read off the key layout: block
counts per stage from the indices in the names, SE from `res_layer.5`, widths and embedding size
from the shapes. A ViT's layout shows its width and depth but not its training-only settings (drop path,
masking), so insightface's `vit_b_dp005_mask_005` weights are recognised as `vit_b`, which embeds the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cdface.errors import FormatError
from cdface.models.ir import IR_STAGES
from cdface.models.iresnet import IRESNET_LAYERS
from cdface.models.vit import VIT_SETTINGS

__all__ = [
    "WRAPPER_PREFIXES",
    "strip_wrapper_prefixes",
    "load_state_dict_strict",
    "infer_arch_from_state_dict",
    "infer_model_config",
    "nearest_layout",
]

_SHOW = 5  # how many keys of each kind an error message lists
_IRESNET_BY_LAYERS = {layers: name for name, layers in IRESNET_LAYERS.items()}
_IR_BY_STAGES = {stages: depth for depth, stages in IR_STAGES.items()}
_MBF_VARIANTS = {((1, 4, 6, 2), 2): "mobilefacenet", ((2, 8, 12, 4), 4): "mobilefacenet_large"}
_IR_BLOCK_CONV = re.compile(r"^body\.(\d+)\.res_layer\.1\.weight$")
# (embed_dim, depth) -> name; the first name of each shape in VIT_SETTINGS is the plain one (vit_b, not
# vit_b_dp005_mask_005); vit_tiny is the test model's shape.
_VIT_BY_SHAPE = {**{s[:2]: n for n, s in reversed(VIT_SETTINGS.items())}, (32, 2): "vit_tiny"}
_TRANSFACE_BY_SHAPE = {(512, 12): "transface_s", (512, 24): "transface_b", (768, 24): "transface_l",
                       (32, 2): "transface_tiny"}
_VIT_BLOCK = re.compile(r"^blocks\.(\d+)\.norm1\.weight$")
_IRESNET_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.")
_MBF_RESIDUAL = re.compile(r"^layers\.(\d+)\.layers\.(\d+)\.layers\.0\.layers\.0\.weight$")
_ADAFACE_NAMES = {(18, False): "adaface_ir18", (34, False): "adaface_ir34", (50, False): "adaface_ir50",
                  (100, False): "adaface_ir101", (50, True): "adaface_ir_se50", (100, True): "adaface_ir_se101"}
_FACENET_REPEAT = re.compile(r"^repeat_([1-3])\.(\d+)\.conv2d\.weight$")


# What wrappers put in front of every key: DataParallel / DDP ("module."), torch.compile ("_orig_mod."), and a
# model holding the backbone as an attribute ("backbone.", e.g. insightface-style training wrappers).
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "backbone.")


def strip_wrapper_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The state_dict without the wrapper prefixes (`WRAPPER_PREFIXES`) that every key carries, in any nesting
    (a compiled DDP model saves `module._orig_mod.x`); a prefix only some keys have is kept.

    The one implementation behind `load_state_dict_strict` (so `init_from`, resume and `cdface eval` accept
    the same files) and the architecture inference."""
    state = dict(state_dict)
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(isinstance(k, str) and k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped = True
    return state


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, Tensor) else None


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else "")


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Any], source: str | Path) -> nn.Module:
    """Load `state_dict` into `model` requiring an exact match of keys and shapes; return the model.

    On any difference raise FormatError naming `source`, the first few missing keys, unexpected keys and
    shape mismatches, and (when recognisable) the architecture the checkpoint looks like.
    """
    expected = model.state_dict()
    # a model whose own keys carry a wrapper prefix keeps it; otherwise DDP / torch.compile prefixes go
    state = dict(state_dict) if set(state_dict) == set(expected) else strip_wrapper_prefixes(state_dict)
    non_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if non_tensors:
        raise FormatError(source, f"key {non_tensors[0]!r}",
                          f"a state_dict of tensors; {len(non_tensors)} value(s) are not tensors")
    # torch's own strict loader fills a BatchNorm's missing `num_batches_tracked` (a counter that only matters
    # when training with momentum=None) in a state_dict without version metadata, as old and converted files
    # are: do the same, with the model's own value
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = expected[key]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        arch = getattr(model, "arch", type(model).__name__)
        parts = [f"weights for {arch}"]
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
        guess = infer_arch_from_state_dict(state)
        if guess is not None and guess != arch:
            parts.append(f"the checkpoint looks like {guess}")
        elif guess is None:
            parts.append(nearest_layout(state))
        raise FormatError(source, None, "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model


def infer_arch_from_state_dict(state_dict: Mapping[str, Any]) -> str | None:
    """The registry name whose layout these keys have (e.g. "iresnet100", "ir_se50"), or None."""
    config = infer_model_config(state_dict)
    return None if config is None else config["arch"]


def infer_model_config(state_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """`{"arch", "embedding_size", "model_kwargs"}` that rebuild a model matching these weights, or None.

    `model_kwargs` carries what the keys reveal beyond the name (the IR family's input size and whether
    its output BatchNorm1d is affine); pass it to `create_model(arch, embedding_size, **model_kwargs)`.
    """
    state = strip_wrapper_prefixes(state_dict)
    for infer in (_infer_iresnet, _infer_adaface_ir, _infer_ir, _infer_mobilefacenet, _infer_vit, _infer_facenet):
        config = infer(state)
        if config is not None:
            return config
    return None


def _infer_iresnet(state: dict[str, Any]) -> dict[str, Any] | None:
    fc = _shape(state.get("fc.weight"))
    if fc is None or "conv1.weight" not in state or "features.running_mean" not in state:
        return None
    blocks = [0, 0, 0, 0]
    for key in state:
        match = _IRESNET_BLOCK.match(key)
        if match:
            stage, index = int(match.group(1)) - 1, int(match.group(2))
            blocks[stage] = max(blocks[stage], index + 1)
    name = _IRESNET_BY_LAYERS.get(tuple(blocks))
    stem = _shape(state.get("conv1.weight"))
    if tuple(blocks) == (1, 1, 1, 1) and stem is not None and stem[0] == 16:
        name = "iresnet_tiny"
    if name is None:
        return None
    return {"arch": name, "embedding_size": fc[0], "model_kwargs": {}}


def _infer_ir(state: dict[str, Any]) -> dict[str, Any] | None:
    fc = _shape(state.get("output_layer.3.weight"))
    if fc is None or "input_layer.0.weight" not in state or "body.0.res_layer.5.running_mean" in state:
        return None  # a BatchNorm at res_layer.5 is AdaFace's layout (_infer_adaface_ir)
    per_depth: dict[int, int] = {}
    for key, value in state.items():
        if _IR_BLOCK_CONV.match(key) and _shape(value) is not None:
            depth = int(value.shape[0])
            per_depth[depth] = per_depth.get(depth, 0) + 1
    stages = tuple(per_depth.get(depth, 0) for depth in (64, 128, 256, 512))
    num_layers = _IR_BY_STAGES.get(stages)
    if num_layers is None:
        return None
    mode = "ir_se" if "body.0.res_layer.5.fc1.weight" in state else "ir"
    spatial = round((fc[1] / 512) ** 0.5)
    if 512 * spatial * spatial != fc[1] or spatial not in (7, 14):
        return None
    kwargs = {"input_size": spatial * 16, "output_affine": "output_layer.4.weight" in state}
    return {"arch": f"{mode}{num_layers}", "embedding_size": fc[0], "model_kwargs": kwargs}


def _infer_mobilefacenet(state: dict[str, Any]) -> dict[str, Any] | None:
    fc = _shape(state.get("features.layers.2.weight"))
    stem = _shape(state.get("layers.0.layers.0.weight"))
    if fc is None or stem is None or "conv_sep.layers.0.weight" not in state:
        return None
    scale = stem[0] // 64
    residual_counts: dict[int, int] = {}
    for key in state:
        match = _MBF_RESIDUAL.match(key)
        if match:
            layer, index = int(match.group(1)), int(match.group(2))
            residual_counts[layer] = max(residual_counts.get(layer, 0), index + 1)
    first = residual_counts.get(1, 1)  # a plain ConvBlock at layers.1 means blocks[0] == 1
    blocks = (first, residual_counts.get(3, 0), residual_counts.get(5, 0), residual_counts.get(7, 0))
    name = _MBF_VARIANTS.get((blocks, scale))
    if name is None:
        return None
    return {"arch": name, "embedding_size": fc[0], "model_kwargs": {}}


def _infer_vit(state: dict[str, Any]) -> dict[str, Any] | None:
    pos = _shape(state.get("pos_embed"))
    head = _shape(state.get("feature.2.weight"))
    patch = _shape(state.get("patch_embed.proj.weight"))
    if pos is None or head is None or patch is None or len(pos) != 3 or len(patch) != 4:
        return None
    if patch[2:] != (9, 9) or pos[1] != 144:  # insightface's 112x112 faces in 9x9 patches
        return None
    depth = 1 + max((int(m.group(1)) for m in map(_VIT_BLOCK.match, state) if m), default=-1)
    by_shape = _TRANSFACE_BY_SHAPE if "senet.0.weight" in state else _VIT_BY_SHAPE  # TransFace's patch gate
    name = by_shape.get((pos[2], depth))
    if name is None:
        return None
    return {"arch": name, "embedding_size": head[0], "model_kwargs": {}}


def _infer_adaface_ir(state: dict[str, Any]) -> dict[str, Any] | None:
    """AdaFace / TFace / CVLface IR: face.evoLVe's keys plus a BatchNorm at res_layer.2 and res_layer.5."""
    fc = _shape(state.get("output_layer.3.weight"))
    if fc is None or "input_layer.0.weight" not in state or "body.0.res_layer.5.running_mean" not in state:
        return None
    per_depth: dict[int, int] = {}
    for key, value in state.items():
        if _IR_BLOCK_CONV.match(key) and _shape(value) is not None:
            per_depth[int(value.shape[0])] = per_depth.get(int(value.shape[0]), 0) + 1
    widths = tuple(sorted(per_depth))
    if len(widths) != 4 or fc[1] != widths[3] * 49:  # 112x112 input: a 7x7 map before the fc
        return None
    name = _ADAFACE_NAMES.get(
        (_IR_BY_STAGES.get(tuple(per_depth[w] for w in widths), 0), "body.0.res_layer.se_block.fc1.weight" in state)
    )
    if name is None:
        return None
    kwargs = {} if widths == (64, 128, 256, 512) else {"widths": widths}
    return {"arch": name, "embedding_size": fc[0], "model_kwargs": kwargs}


def _infer_facenet(state: dict[str, Any]) -> dict[str, Any] | None:
    """facenet-pytorch's InceptionResnetV1: `conv2d_1a` ... `repeat_{1,2,3}` ... `last_linear`, `last_bn`."""
    stem = _shape(state.get("conv2d_1a.conv.weight"))
    head = _shape(state.get("last_linear.weight"))
    if stem is None or head is None or "block8.conv2d.weight" not in state or 32 % stem[0]:
        return None
    repeats = [0, 0, 0]
    for key in state:
        match = _FACENET_REPEAT.match(key)
        if match:
            repeats[int(match.group(1)) - 1] = max(repeats[int(match.group(1)) - 1], int(match.group(2)) + 1)
    if min(repeats) < 1:
        return None
    kwargs: dict[str, Any] = {}
    if tuple(repeats) != (5, 10, 5):
        kwargs["repeats"] = tuple(repeats)
    if stem[0] != 32:
        kwargs["channel_divisor"] = 32 // stem[0]
    return {"arch": "inception_resnet_v1", "embedding_size": head[0], "model_kwargs": kwargs}


# One model of each key layout the loader knows, and who releases weights in it: an unknown state_dict is
# compared with these to name the nearest and what differs.
_LAYOUT_FAMILIES = {
    "iresnet50": "insightface IResNet (arcface_torch, MagFace, ElasticFace)",
    "ir50": "face.evoLVe IR (the paper's code, CurricularFace)",
    "ir_se50": "face.evoLVe IR-SE",
    "adaface_ir50": "AdaFace / TFace / CVLface IR",
    "mobilefacenet": "insightface MobileFaceNet",
    "vit_b": "insightface ViT",
    "inception_resnet_v1": "facenet-pytorch InceptionResnetV1",
}
_INDEX = re.compile(r"\d+")


def _patterns(keys: Any) -> dict[str, str]:
    """{key with every number replaced by '#': one example key}."""
    out: dict[str, str] = {}
    for key in keys:
        out.setdefault(_INDEX.sub("#", str(key)), str(key))
    return out


def nearest_layout(state_dict: Mapping[str, Any]) -> str:
    """One line naming the known key layout nearest to these keys (shared key patterns, numbers ignored) and
    what differs: a few key patterns it lacks and a few it has that the layout does not."""
    from cdface.models.registry import create_model

    found = _patterns(strip_wrapper_prefixes(state_dict))
    best: tuple[float, str, dict[str, str]] | None = None
    for name in _LAYOUT_FAMILIES:
        with torch.device("meta"):
            ref = _patterns(create_model(name).state_dict())
        score = len(found.keys() & ref.keys()) / max(1, len(found.keys() | ref.keys()))
        if best is None or score > best[0]:
            best = (score, name, ref)
    assert best is not None
    score, name, ref = best
    lacking = [ref[p] for p in ref if p not in found]
    extra = [found[p] for p in found if p not in ref]
    text = (f"nearest known layout: {_LAYOUT_FAMILIES[name]} ({name}), {len(found.keys() & ref.keys())} of its "
            f"{len(ref)} key patterns present")
    if lacking:
        text += f"; it has keys like {_listing(lacking)} that this file lacks"
    if extra:
        text += f"; this file has keys like {_listing(extra)} that it does not"
    return text
