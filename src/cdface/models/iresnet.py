"""IResNet, the backbone of insightface's arcface_torch (r18 ... r200), with its exact state_dict layout.

Parameter names, shapes, BN eps (1e-5), the stride on each first block's *second* 3x3 conv, the frozen
unit weight of the final BatchNorm1d and the fp16 behaviour (body under autocast, fc in float32) follow
arcface_torch, so its published `.pth` files load with `strict=True` and give the same embeddings.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cdface.models.registry import default_input_cfg, register_model

__all__ = ["IBasicBlock", "IResNet", "IRESNET_LAYERS", "iresnet18", "iresnet34", "iresnet50", "iresnet100",
           "iresnet200"]

IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}
_BN_EPS = 1e-5


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 eps: float = _BN_EPS):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=eps)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=eps)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """IResNet for 112x112 faces: four stride-2 stages (112 -> 7), then BN2d, dropout, fc, BatchNorm1d.

    Args:
        layers: blocks per stage.
        embedding_size: output dimension (insightface's `num_features`).
        dropout: probability before fc (insightface default 0).
        fp16: run the body under CUDA autocast and the fc in float32, as arcface_torch does. Has no
            effect on CPU tensors, so CPU numbers are the float32 ones.
        gradient_checkpointing: recompute each block in backward (training only) to save memory; as in
            insightface, the recompute updates BN running statistics a second time.
        channels_last: keep weights and activations NHWC (faster convs on tensor-core GPUs).
        zero_init_residual: insightface's option: zero each block's `bn2` weight (sic, not `bn3`).
        bn_eps: every BatchNorm's epsilon: 1e-5 in arcface_torch, 2e-5 in MagFace's copy (not in the
            state_dict, so it is the architecture's to know).
        widths: the four stages' channels (64, 128, 256, 512 in every release; narrower only for tests).
    """

    fc_scale = 7 * 7

    def __init__(
        self,
        layers: tuple[int, int, int, int] | list[int],
        embedding_size: int = 512,
        dropout: float = 0.0,
        fp16: bool = False,
        gradient_checkpointing: bool = False,
        channels_last: bool = False,
        zero_init_residual: bool = False,
        bn_eps: float = _BN_EPS,
        widths: tuple[int, int, int, int] | list[int] = (64, 128, 256, 512),
    ):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"IResNet needs 4 positive block counts, got {list(layers)}")
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"IResNet needs 4 positive stage widths, got {list(widths)}")
        self.fp16 = bool(fp16)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.channels_last = bool(channels_last)
        self.bn_eps = float(bn_eps)
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=bn_eps)
        self.prelu = nn.PReLU(widths[0])
        self.layer1 = self._make_layer(widths[0], layers[0])
        self.layer2 = self._make_layer(widths[1], layers[1])
        self.layer3 = self._make_layer(widths[2], layers[2])
        self.layer4 = self._make_layer(widths[3], layers[3])
        self.bn2 = nn.BatchNorm2d(widths[3], eps=bn_eps)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(widths[3] * self.fc_scale, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=bn_eps)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IBasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

        self.input_cfg = default_input_cfg((112, 112))
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=self.bn_eps),
        )
        stage = [IBasicBlock(self.inplanes, planes, stride=2, downsample=downsample, eps=self.bn_eps)]
        self.inplanes = planes
        stage.extend(IBasicBlock(planes, planes, eps=self.bn_eps) for _ in range(1, blocks))
        return nn.Sequential(*stage)

    def _run_stage(self, stage: nn.Sequential, x: Tensor) -> Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            for block in stage:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return stage(x)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, 112, 112) RGB in [-1, 1] -> (N, embedding_size), not normalised."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16 and x.is_cuda):
            x = self.prelu(self.bn1(self.conv1(x)))
            for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
                x = self._run_stage(stage, x)
            x = self.bn2(x)
            x = torch.flatten(x, 1)
            x = self.dropout(x)
        x = self.fc(x.float() if self.fp16 else x)
        return self.features(x)


def _register(name: str, alias: str) -> Callable[..., IResNet]:
    """Register a constructor for one depth; every depth takes the same options as `IResNet`."""
    layers = IRESNET_LAYERS[name]

    def build(
        embedding_size: int = 512,
        dropout: float = 0.0,
        fp16: bool = False,
        gradient_checkpointing: bool = False,
        channels_last: bool = False,
        zero_init_residual: bool = False,
    ) -> IResNet:
        return IResNet(
            layers,
            embedding_size=embedding_size,
            dropout=dropout,
            fp16=fp16,
            gradient_checkpointing=gradient_checkpointing,
            channels_last=channels_last,
            zero_init_residual=zero_init_residual,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"insightface {alias}: IResNet with blocks {layers}."
    return register_model(build, aliases=(alias,))


iresnet18 = _register("iresnet18", "r18")
iresnet34 = _register("iresnet34", "r34")
iresnet50 = _register("iresnet50", "r50")
iresnet100 = _register("iresnet100", "r100")  # 65,156,160 parameters at embedding 512
iresnet200 = _register("iresnet200", "r200")
