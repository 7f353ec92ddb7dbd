"""What a run leaves for use outside training: `backbone.pt` (a plain state_dict) and its model card `model.json`
(architecture, input contract, how it was trained), written beside every checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cdface import __version__
from cdface.config import TrainConfig
from cdface.files import atomic_write, atomic_writer
from cdface.models.input_contract import InputContract
from cdface.train.model_options import model_options

__all__ = ["export_backbone"]


def export_backbone(backbone: torch.nn.Module, cfg: TrainConfig, run_dir: Path, num_classes: int, step: int) -> Path:
    """`backbone.pt` (a plain state_dict, loadable with weights_only=True) and its model card `model.json`."""
    path = run_dir / "backbone.pt"
    with atomic_writer(path) as handle:
        torch.save({k: v.detach().cpu() for k, v in backbone.state_dict().items()}, handle)
    card = {
        "arch": cfg.model.arch,
        "embedding_size": cfg.model.embedding_size,
        # the options that define the architecture; fp16 / checkpointing / channels_last are how it was trained
        "model_kwargs": {
            k: v
            for k, v in dict(getattr(backbone, "model_kwargs", model_options(cfg))).items()
            if k not in ("fp16", "gradient_checkpointing", "channels_last")
        },
        **InputContract.from_model(backbone).card_fields(),  # what the training loop applied
        "training": {
            "method": cfg.method,
            "head": cfg.head.name,
            "head_params": cfg.head.params,
            "dataset": cfg.data.path,
            "num_classes": num_classes,
            "step": step,
            "cdface_version": __version__,
        },
        "evaluation": {},
    }
    atomic_write(run_dir / "model.json", json.dumps(card, indent=2, sort_keys=True))
    return path
