"""Optimizer with the paper's parameter groups: no weight decay on BatchNorm parameters."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from cdface.config import OptimConfig


def split_decay_groups(modules: Iterable[nn.Module]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decay, no_decay): parameters of normalisation layers go to no_decay."""
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for sub in module.modules():
            is_norm = isinstance(sub, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
            for param in sub.parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                (no_decay if is_norm else decay).append(param)
    return decay, no_decay


def build_optimizer(
    cfg: OptimConfig, modules: list[nn.Module], lr_scales: list[float] | None = None
) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters of `modules`.

    `lr_scales` (one per module, e.g. [0.1, 1.0] for backbone and head): each module gets its own groups,
    tagged ``"part": <module index>``, with lr = cfg.lr x its scale (the schedule multiplies each group's own
    lr); None keeps one set of groups for all modules.
    """
    parts = [[m] for m in modules] if lr_scales is not None else [modules]
    scales = list(lr_scales) if lr_scales is not None else [1.0]
    groups: list[dict] = []
    for index, (part, scale) in enumerate(zip(parts, scales, strict=True)):
        tag = {"part": index, "lr": cfg.lr * scale} if lr_scales is not None else {}
        if cfg.no_decay_on_bn:
            decay, no_decay = split_decay_groups(part)
            groups += [
                {"params": decay, "weight_decay": cfg.weight_decay, **tag},
                {"params": no_decay, "weight_decay": 0.0, **tag},
            ]
        else:
            params = [p for m in part for p in m.parameters() if p.requires_grad]
            groups.append({"params": params, "weight_decay": cfg.weight_decay, **tag})
    # fused: one kernel per step, and the `found_inf` flag that skips a bad step on the device (train/step.py)
    fused = _fusable(groups)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)


def _fusable(groups: list[dict]) -> bool:
    """Whether torch's fused optimizers take these parameters (floating point, on one supported device)."""
    params = [p for group in groups for p in group["params"]]
    devices = {p.device.type for p in params}
    return bool(params) and len(devices) == 1 and devices <= {"cpu", "cuda"} and all(
        p.is_floating_point() for p in params
    )
