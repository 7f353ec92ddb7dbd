"""Inception-ResNet-v1 as facenet-pytorch releases it (timesler/facenet-pytorch `models/inception_resnet_v1.py`,
the port of David Sandberg's TensorFlow facenet models 20180402-114759 (VGGFace2) and 20180408-102900
(CASIA-WebFace)).

Module names follow facenet-pytorch, so its state_dicts load with `strict=True` once the classifier
(`logits.*`, 8631 or 10575 classes) is set aside (`cdface.models.released` does that). BatchNorms use TensorFlow's
eps 1e-3. Input contract: 160x160 RGB crops with facenet-pytorch's `fixed_image_standardization`,
`(x - 127.5) / 128`, i.e. mean 127.5/255 and std 128/255 in 0..1 units. facenet-pytorch's forward L2-normalises
the embedding; this one returns it before normalisation (the same direction), as every cdface backbone does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cdface.models.registry import register_model

__all__ = ["FACENET_INPUT_CFG", "InceptionResnetV1"]

# facenet-pytorch fixed_image_standardization: (x - 127.5) / 128 on 0..255 RGB
FACENET_INPUT_CFG = {"input_size": (160, 160), "mean": (127.5 / 255,) * 3, "std": (128 / 255,) * 3, "color": "RGB"}
_REPEATS = (5, 10, 5)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BN (eps 1e-3, TensorFlow's) -> ReLU."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int | tuple[int, int], stride: int,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, stride=stride, padding=padding,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=0.001, momentum=0.1, affine=True)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class _Residual(nn.Module):
    """The shared shape of Block35 / Block17 / Block8: concatenated branches, a 1x1 conv (with bias) scaled
    by `scale` and added to the input, then ReLU (none for the last Block8)."""

    def __init__(self, scale: float, relu: bool = True):
        super().__init__()
        self.scale = scale
        if relu:
            self.relu = nn.ReLU(inplace=False)

    def branches(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2d(torch.cat(self.branches(x), 1)) * self.scale + x
        return self.relu(out) if hasattr(self, "relu") else out


class Block35(_Residual):
    def __init__(self, c: dict[str, int], scale: float = 1.0):
        super().__init__(scale)
        b, s = c["c256"], c["c32"]
        self.branch0 = BasicConv2d(b, s, 1, 1)
        self.branch1 = nn.Sequential(BasicConv2d(b, s, 1, 1), BasicConv2d(s, s, 3, 1, 1))
        self.branch2 = nn.Sequential(BasicConv2d(b, s, 1, 1), BasicConv2d(s, s, 3, 1, 1), BasicConv2d(s, s, 3, 1, 1))
        self.conv2d = nn.Conv2d(3 * s, b, kernel_size=1, stride=1)

    def branches(self, x: Tensor) -> list[Tensor]:
        return [self.branch0(x), self.branch1(x), self.branch2(x)]


class Block17(_Residual):
    def __init__(self, c: dict[str, int], scale: float = 1.0):
        super().__init__(scale)
        b, s = c["c896"], c["c128"]
        self.branch0 = BasicConv2d(b, s, 1, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(b, s, 1, 1), BasicConv2d(s, s, (1, 7), 1, (0, 3)), BasicConv2d(s, s, (7, 1), 1, (3, 0))
        )
        self.conv2d = nn.Conv2d(2 * s, b, kernel_size=1, stride=1)

    def branches(self, x: Tensor) -> list[Tensor]:
        return [self.branch0(x), self.branch1(x)]


class Block8(_Residual):
    def __init__(self, c: dict[str, int], scale: float = 1.0, no_relu: bool = False):
        super().__init__(scale, relu=not no_relu)
        b, s = c["c1792"], c["c192"]
        self.branch0 = BasicConv2d(b, s, 1, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(b, s, 1, 1), BasicConv2d(s, s, (1, 3), 1, (0, 1)), BasicConv2d(s, s, (3, 1), 1, (1, 0))
        )
        self.conv2d = nn.Conv2d(2 * s, b, kernel_size=1, stride=1)

    def branches(self, x: Tensor) -> list[Tensor]:
        return [self.branch0(x), self.branch1(x)]


class Mixed6a(nn.Module):
    def __init__(self, c: dict[str, int]):
        super().__init__()
        self.branch0 = BasicConv2d(c["c256"], c["c384"], 3, 2)
        self.branch1 = nn.Sequential(
            BasicConv2d(c["c256"], c["c192"], 1, 1), BasicConv2d(c["c192"], c["c192"], 3, 1, 1),
            BasicConv2d(c["c192"], c["c256"], 3, 2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Mixed7a(nn.Module):
    def __init__(self, c: dict[str, int]):
        super().__init__()
        b, m = c["c896"], c["c256"]
        self.branch0 = nn.Sequential(BasicConv2d(b, m, 1, 1), BasicConv2d(m, c["c384"], 3, 2))
        self.branch1 = nn.Sequential(BasicConv2d(b, m, 1, 1), BasicConv2d(m, m, 3, 2))
        self.branch2 = nn.Sequential(BasicConv2d(b, m, 1, 1), BasicConv2d(m, m, 3, 1, 1), BasicConv2d(m, m, 3, 2))
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class InceptionResnetV1(nn.Module):
    """facenet-pytorch's InceptionResnetV1 without its classifier: (N, 3, 160, 160) standardised RGB ->
    (N, embedding_size) (`last_bn`'s output, not normalised).

    Args:
        embedding_size: 512 in both releases (`last_linear` 1792 -> 512, no bias; `last_bn` eps 1e-3).
        repeats: Block35 / Block17 / Block8 counts, (5, 10, 5) in the releases.
        channel_divisor: every width divided by this (1 in the releases; 8 or 16 only for test models).
        dropout: before `last_linear` (0.6 in facenet-pytorch; inactive at inference).
    """

    def __init__(self, embedding_size: int = 512, repeats: tuple[int, int, int] = _REPEATS,
                 channel_divisor: int = 1, dropout: float = 0.6):
        super().__init__()
        widths = (32, 64, 80, 128, 192, 256, 384, 896, 1792)
        if channel_divisor < 1 or any(w % channel_divisor for w in widths):
            raise ValueError(f"channel_divisor must divide {widths}, got {channel_divisor}")
        if len(repeats) != 3 or min(repeats) < 1:
            raise ValueError(f"repeats needs 3 positive block counts, got {repeats}")
        c = {f"c{w}": w // channel_divisor for w in widths}
        self.conv2d_1a = BasicConv2d(3, c["c32"], 3, 2)
        self.conv2d_2a = BasicConv2d(c["c32"], c["c32"], 3, 1)
        self.conv2d_2b = BasicConv2d(c["c32"], c["c64"], 3, 1, 1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(c["c64"], c["c80"], 1, 1)
        self.conv2d_4a = BasicConv2d(c["c80"], c["c192"], 3, 1)
        self.conv2d_4b = BasicConv2d(c["c192"], c["c256"], 3, 2)
        self.repeat_1 = nn.Sequential(*(Block35(c, scale=0.17) for _ in range(repeats[0])))
        self.mixed_6a = Mixed6a(c)
        self.repeat_2 = nn.Sequential(*(Block17(c, scale=0.10) for _ in range(repeats[1])))
        self.mixed_7a = Mixed7a(c)
        self.repeat_3 = nn.Sequential(*(Block8(c, scale=0.20) for _ in range(repeats[2])))
        self.block8 = Block8(c, no_relu=True)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.last_linear = nn.Linear(c["c1792"], embedding_size, bias=False)
        self.last_bn = nn.BatchNorm1d(embedding_size, eps=0.001, momentum=0.1, affine=True)
        self.input_cfg = dict(FACENET_INPUT_CFG)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2d_4b(self.conv2d_4a(self.conv2d_3b(self.maxpool_3a(self.conv2d_2b(self.conv2d_2a(
            self.conv2d_1a(x)))))))
        x = self.block8(self.repeat_3(self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x))))))
        x = self.dropout(self.avgpool_1a(x)).flatten(1)
        return self.last_bn(self.last_linear(x))


@register_model(aliases=("facenet", "inceptionresnetv1"))
def inception_resnet_v1(embedding_size: int = 512, repeats: tuple[int, int, int] = _REPEATS,
                        channel_divisor: int = 1, dropout: float = 0.6) -> InceptionResnetV1:
    """facenet-pytorch InceptionResnetV1 (VGGFace2 / CASIA-WebFace releases): 160x160 RGB, (x - 127.5)/128."""
    return InceptionResnetV1(embedding_size, tuple(repeats), channel_divisor, dropout)
