"""Start a new run from another model (`init_from`): stage 2 from stage 1, or fine-tuning a pretrained backbone.

What is taken depends on what the source holds and on `finetune.backbone_only`:
- a cdface training checkpoint (or a run folder holding one) of the same training set: backbone, head and
  difficulty scores (stage 2 continues stage 1's scores). Its data fingerprint is compared with this run's set
  (`cdface.data.fingerprint`): another set is refused with one line naming what differs;
- with `finetune.backbone_only: true`, such a checkpoint of any set: its backbone only;
- a backbone-only file (a plain state_dict, a run's `backbone.pt` with its `model.json`, or any format the
  project's model loader reads: `cdface.inference.loading.load_embedding_model`): its backbone, with the input
  contract (mean, std, colour order) of its model card, which training then applies.
Without a head or scores from the source, the head is new (random, or the class means of this set's images with
`finetune.head_init: class_means`) and the scores start fresh. The log says which.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdface.config import TrainConfig
from cdface.errors import CdfaceError, ConfigError, FormatError
from cdface.files import load_weights
from cdface.models import InputContract, infer_model_config, load_state_dict_strict
from cdface.train import checkpoint as ckpt
from cdface.train.finetune import class_mean_centres

log = logging.getLogger("cdface.train")

@dataclass
class StartingPoint:
    """What a run took from `path` and what it created; `state` is the checkpoint when head and scores come from
    it (the trainer loads those into its own head and score bank), else None."""

    path: Path
    taken: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    state: dict[str, Any] | None = None

    def summary(self) -> str:
        created = f"; created: {', '.join(self.created)}" if self.created else ""
        return f"init_from {self.path}: took {', '.join(self.taken)}{created}"


def resolve_init(init_from: str) -> Path:
    """A file; or a run folder: its newest valid checkpoint, else its `backbone.pt`."""
    path = Path(init_from)
    if path.is_dir():
        found = ckpt.newest_valid_checkpoint(path)
        if found is not None:
            return found
        for name in ("backbone.pt", "backbone.pth"):
            if (path / name).is_file():
                return path / name
        raise CdfaceError(f"init_from: no valid checkpoint and no backbone.pt in {path}")
    if not path.is_file():
        raise CdfaceError(f"init_from: {path} does not exist")
    return path


def take_backbone(cfg: TrainConfig, backbone: nn.Module, dataset: Any) -> StartingPoint:
    """Load the backbone of `cfg.init_from` into `backbone` (and its input contract); returns what was taken,
    with the checkpoint in `state` when head and scores are to be taken too."""
    path = resolve_init(cfg.init_from)
    obj = None
    from cdface.inference.loading import is_onnx_file

    if not is_onnx_file(path):  # an ONNX graph goes to the loader, which reads it and is then refused below
        try:
            obj = load_weights(path, "a cdface checkpoint, a run's backbone.pt or a backbone state_dict")
        except FormatError:
            pass  # not a torch.save file: maybe another format the model loader reads (it says if not)
    if isinstance(obj, dict) and "backbone" in obj and "head" in obj:  # a training checkpoint (scores checked later)
        state = ckpt.load_checkpoint(path)  # the checksum check of a training checkpoint
        point = StartingPoint(path)
        if not cfg.finetune.backbone_only:
            _check_same_set(state, dataset, path, cfg)
            point.state = state
        load_state_dict_strict(backbone, state["backbone"], path)
        if isinstance(state.get("input_cfg"), dict):
            backbone.input_cfg = dict(state["input_cfg"])
        point.taken.append(_describe_backbone(backbone, "checkpoint"))
        if point.state is not None:
            point.taken += ["its head", "its difficulty scores"]
        return point
    return _take_backbone_file(cfg, backbone, path)


def _take_backbone_file(cfg: TrainConfig, backbone: nn.Module, path: Path) -> StartingPoint:
    """A backbone-only file, read by the project's model loader (any format it knows, with its card)."""
    from cdface.inference.loading import load_embedding_model

    try:  # the file's own card or key layout names the architecture (so every format the loader knows works)
        loaded = load_embedding_model(path, device="cpu")
    except FormatError:
        try:  # a layout the loader does not recognise: read it as this run's architecture
            loaded = load_embedding_model(
                path, arch=cfg.model.arch, embedding_size=cfg.model.embedding_size, device="cpu"
            )
        except FormatError as exc:
            raise ConfigError(f"init_from: {exc}") from None
    module = getattr(loaded, "module", None)
    if not isinstance(module, nn.Module):  # an ONNX graph runs under onnxruntime: nothing to train
        raise ConfigError(
            f"init_from {path}: a {type(loaded).__name__} holds no trainable module; import its weights into one "
            f"of our architectures first (cdface models import {path} --arch ARCH --out backbone.pt) and start "
            "from that"
        )
    arch = getattr(module, "arch", None) or type(module).__name__
    ours = getattr(backbone, "arch", None) or type(backbone).__name__
    try:
        load_state_dict_strict(backbone, module.state_dict(), path)
    except FormatError as exc:
        size = (infer_model_config(module.state_dict()) or {}).get("embedding_size")
        wanted = f"model.arch={arch}" + (f" model.embedding_size={size}" if size else "")
        raise ConfigError(
            f"init_from {path}: its backbone is {arch}" + (f" (embedding {size})" if size else "")
            + f", this run builds {ours} (model.arch={cfg.model.arch}, model.embedding_size="
            f"{cfg.model.embedding_size}); set {wanted} ({exc.expected})"
        ) from None
    backbone.input_cfg = dict(loaded.input_cfg)
    source = loaded.preprocessing.get("source", "the model") if isinstance(loaded.preprocessing, dict) else ""
    return StartingPoint(path, taken=[_describe_backbone(backbone, f"input contract from {source or 'the model'}")])


def _describe_backbone(backbone: nn.Module, where: str) -> str:
    contract = InputContract.from_model(backbone)
    count = len(backbone.state_dict())
    fields = contract.card_fields()
    return (
        f"the backbone ({getattr(backbone, 'arch', type(backbone).__name__)}, {count} tensors; input "
        f"{fields['color']} mean {fields['mean']} std {fields['std']}, {where})"
    )


def _check_same_set(state: dict[str, Any], dataset: Any, path: Path, cfg: TrainConfig) -> None:
    """Refuse head and scores of another training set, naming what differs and how to fine-tune instead."""
    hint = (
        "; to fine-tune its backbone on this set (new head, fresh scores) set finetune.backbone_only=true"
    )
    checked = ckpt.check_data_fingerprint(state, dataset.fingerprint, path, cfg.data.path, hint)
    if not checked:  # a checkpoint written before fingerprints: the class count is all there is to compare
        saved_classes = state.get("num_classes")
        if isinstance(saved_classes, int) and saved_classes != dataset.num_classes:
            raise ckpt.CheckpointError(
                f"{path}: belongs to another training set than data.path {cfg.data.path}: {saved_classes} classes "
                f"there, {dataset.num_classes} here{hint}"
            )
        log.warning("%s: written before data fingerprints: cannot check that it belongs to this training set", path)


def new_head(
    cfg: TrainConfig, start: StartingPoint, head: nn.Module, backbone: nn.Module, dataset: Any,
    device: torch.device, is_main: bool = True,
) -> None:
    """A run that took only a backbone: the head (built at random) starts from the class means of this set's images
    with `finetune.head_init: class_means`; the scores stay fresh. Both recorded in `start.created`."""
    if cfg.finetune.head_init == "class_means":
        centres, used = class_mean_centres(
            backbone, dataset, InputContract.from_model(backbone), device, cfg.finetune.head_init_images
        )
        with torch.no_grad():
            if hasattr(head, "load_full_weight"):  # a sharded head: its own rows
                head.load_full_weight(centres)
            else:
                head.weight.copy_(centres.to(head.weight.dtype))
        start.created.append(f"a new {cfg.head.name} head of {dataset.num_classes} classes from the class means of "
                             f"{used} images")
    else:
        start.created.append(f"a new {cfg.head.name} head of {dataset.num_classes} classes (random, seed {cfg.seed})")
    start.created.append(f"fresh difficulty scores for {len(dataset)} samples")
    if cfg.method == "cd" and is_main:
        log.warning("method: cd with fresh difficulty scores: the first CD steps draw easy and hard samples from "
                    "scores that know nothing yet; run a short stage 1 first (configs/finetune_arcface.yaml)")
