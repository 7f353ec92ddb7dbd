"""Fine-tuning options: frozen backbone parts, frozen BatchNorm statistics, a new head from class means.

`finetune.freeze` names backbone parameter-name prefixes (``layer1``, ``conv1`` for an IResNet; ``body.0``
for an IR; ``layers.0`` for a MobileFaceNet; ``patch_embed``, ``blocks.0`` for a ViT): their parameters are not
trained (left out of the optimizer) and their BatchNorm layers keep their running statistics.
`finetune.freeze_bn` keeps every BatchNorm layer of the backbone on its running statistics (eval mode), the
usual choice when the new set is small or its batches are: the pretrained statistics are better estimates
than a few hundred new images give. A new head initialised from class means starts each centre at the mean
embedding of its class (normalised), so the first steps do not push a good backbone around with random
centres (the "imprinting" of Qi et al., CVPR 2018, "Low-Shot Learning with Imprinted Weights").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cdface.config import FinetuneConfig
from cdface.errors import ConfigError, FormatError
from cdface.models import InputContract

_NORMS = (nn.modules.batchnorm._BatchNorm,)


@dataclass
class FrozenParts:
    """What `freeze_backbone` froze: parameter names (not trained) and BatchNorm layers kept in eval mode."""

    parameters: list[str] = field(default_factory=list)
    norms: list[nn.Module] = field(default_factory=list)

    def hold(self) -> None:
        """Put the frozen BatchNorm layers back in eval mode (after any ``model.train()``)."""
        for module in self.norms:
            module.eval()

    def describe(self) -> str:
        parts = []
        if self.parameters:
            parts.append(f"{len(self.parameters)} parameter tensor(s) frozen ({self.parameters[0]} ...)")
        if self.norms:
            parts.append(f"{len(self.norms)} BatchNorm layer(s) on their running statistics")
        return "; ".join(parts)


def freeze_backbone(backbone: nn.Module, cfg: FinetuneConfig) -> FrozenParts:
    """Apply `finetune.freeze` (requires_grad False) and `finetune.freeze_bn`; call before building the optimizer.

    ConfigError for a prefix that names no parameter (with the backbone's top-level parts listed)."""
    frozen = FrozenParts()
    prefixes = [p.strip().rstrip(".") for p in cfg.freeze if p.strip()]
    names = [name for name, _ in backbone.named_parameters()]
    for prefix in prefixes:
        if not any(_under(name, prefix) for name in names):
            parts = list(dict.fromkeys(name.split(".")[0] for name in names))
            raise ConfigError(
                f"finetune.freeze: {prefix!r} names no parameter of model {getattr(backbone, 'arch', '')}; "
                f"its parts are {', '.join(parts)} (a prefix may go deeper, e.g. {names[0].rsplit('.', 1)[0]})"
            )
    for name, param in backbone.named_parameters():
        if any(_under(name, prefix) for prefix in prefixes):
            param.requires_grad_(False)
            frozen.parameters.append(name)
    for name, module in backbone.named_modules():
        if isinstance(module, _NORMS) and (cfg.freeze_bn or any(_under(name, prefix) for prefix in prefixes)):
            frozen.norms.append(module)
    return frozen


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@torch.no_grad()
def class_mean_centres(
    backbone: nn.Module,
    dataset,
    contract: InputContract,
    device: torch.device,
    per_class: int = 16,
    batch_size: int = 64,
) -> tuple[Tensor, int]:
    """((C, D) float32 unit-norm centres, images used): each class's mean L2-normalised embedding of its first
    `per_class` images (0 = all), normalised; the backbone in eval mode, plain images (no flip, no
    augmentation). Corrupt images are skipped; a class with none left keeps a random unit centre.

    Cost: one forward pass over C x per_class images (every rank computes the same centres)."""
    chosen: list[np.ndarray] = [
        members if per_class <= 0 else members[:per_class] for members in dataset.class_to_indices()
    ]
    indices = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    was_training = backbone.training
    backbone.eval()
    sums: Tensor | None = None
    counts = torch.zeros(dataset.num_classes, device=device)
    used = 0
    try:
        for start in range(0, len(indices), batch_size):
            images, labels = [], []
            for index in indices[start:start + batch_size]:
                try:
                    images.append(dataset.load_image(int(index)))
                except FormatError:
                    continue
                labels.append(int(dataset.labels[index]))
            if not images:
                continue
            batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device)
            out = backbone(contract(batch))
            embeddings = F.normalize((out[0] if isinstance(out, (tuple, list)) else out).float(), dim=1)
            if sums is None:
                sums = torch.zeros(dataset.num_classes, embeddings.shape[1], device=device)
            target = torch.as_tensor(labels, device=device)
            sums.index_add_(0, target, embeddings)
            counts.index_add_(0, target, torch.ones(len(labels), device=device))
            used += len(labels)
    finally:
        backbone.train(was_training)
    if sums is None:
        raise ConfigError("finetune.head_init: class_means found no decodable image in the training set")
    empty = counts == 0
    if bool(empty.any()):  # a class without a decodable image among the first ones: a random direction
        sums[empty] = torch.randn(int(empty.sum()), sums.shape[1], device=device)
    return F.normalize(sums, dim=1), used
