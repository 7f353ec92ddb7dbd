"""MobileFaceNet in insightface arcface_torch's `mbf` layout (blocks (1, 4, 6, 2), width scale 2).

Module nesting mirrors arcface_torch so its `mbf` checkpoints load with `strict=True`: `layers` is a
ModuleList of ConvBlock / DepthWise / Residual (each keeping its ops in `.layers`), then `conv_sep` and the
GDC head `features` (depthwise 7x7 conv + BN, Flatten, bias-free Linear, BatchNorm1d).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from cdface.models.init import kaiming_init_
from cdface.models.registry import default_input_cfg, register_model

__all__ = ["ConvBlock", "LinearBlock", "DepthWise", "Residual", "GDC", "MobileFaceNet"]

_Pair = tuple[int, int]


class ConvBlock(nn.Module):
    """Conv (no bias) -> BN -> PReLU."""

    def __init__(self, in_c: int, out_c: int, kernel: _Pair = (1, 1), stride: _Pair = (1, 1),
                 padding: _Pair = (0, 0), groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_c),
            nn.PReLU(out_c),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class LinearBlock(nn.Module):
    """Conv (no bias) -> BN, no activation (the linear bottleneck)."""

    def __init__(self, in_c: int, out_c: int, kernel: _Pair = (1, 1), stride: _Pair = (1, 1),
                 padding: _Pair = (0, 0), groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_c),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted residual: 1x1 expand to `groups` channels, depthwise kxk, 1x1 linear project."""

    def __init__(self, in_c: int, out_c: int, residual: bool = False, kernel: _Pair = (3, 3),
                 stride: _Pair = (2, 2), padding: _Pair = (1, 1), groups: int = 1):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_c, groups, kernel=(1, 1), padding=(0, 0), stride=(1, 1)),
            ConvBlock(groups, groups, groups=groups, kernel=kernel, padding=padding, stride=stride),
            LinearBlock(groups, out_c, kernel=(1, 1), padding=(0, 0), stride=(1, 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(x)
        return out + x if self.residual else out


class Residual(nn.Module):
    """`num_block` residual DepthWise blocks at constant width."""

    def __init__(self, c: int, num_block: int, groups: int, kernel: _Pair = (3, 3), stride: _Pair = (1, 1),
                 padding: _Pair = (1, 1)):
        super().__init__()
        self.layers = nn.Sequential(
            *[DepthWise(c, c, True, kernel, stride, padding, groups) for _ in range(num_block)]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise conv head: 7x7 depthwise conv + BN, flatten, Linear (no bias), BatchNorm1d."""

    def __init__(self, embedding_size: int):
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, groups=512, kernel=(7, 7), stride=(1, 1), padding=(0, 0)),
            nn.Flatten(),
            nn.Linear(512, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """arcface_torch's MobileFaceNet (`get_mbf`), for 112x112 inputs.

    Args:
        embedding_size: output dimension (insightface's `num_features`).
        blocks: residual blocks per stage; (1, 4, 6, 2) is `mbf`, (2, 8, 12, 4) with scale 4 is `mbf_large`.
        scale: width multiplier on 64/128 channels.
        fp16: body under CUDA autocast, head in float32, as arcface_torch; no effect on CPU tensors.
    """

    def __init__(self, embedding_size: int = 512, blocks: tuple[int, int, int, int] = (1, 4, 6, 2),
                 scale: int = 2, fp16: bool = False):
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"MobileFaceNet needs 4 positive block counts, got {list(blocks)}")
        self.scale = scale
        self.fp16 = bool(fp16)
        c1, c2 = 64 * scale, 128 * scale
        self.layers = nn.ModuleList()
        self.layers.append(ConvBlock(3, c1, kernel=(3, 3), stride=(2, 2), padding=(1, 1)))
        if blocks[0] == 1:
            self.layers.append(ConvBlock(c1, c1, kernel=(3, 3), stride=(1, 1), padding=(1, 1), groups=64))
        else:
            self.layers.append(Residual(c1, num_block=blocks[0], groups=128))
        self.layers.extend([
            DepthWise(c1, c1, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=128),
            Residual(c1, num_block=blocks[1], groups=128),
            DepthWise(c1, c2, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=256),
            Residual(c2, num_block=blocks[2], groups=256),
            DepthWise(c2, c2, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=512),
            Residual(c2, num_block=blocks[3], groups=256),
        ])
        self.conv_sep = ConvBlock(c2, 512, kernel=(1, 1), stride=(1, 1), padding=(0, 0))
        self.features = GDC(embedding_size)
        kaiming_init_(self)
        self.input_cfg = default_input_cfg((112, 112))

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, 112, 112) RGB in [-1, 1] -> (N, embedding_size), not normalised."""
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16 and x.is_cuda):
            for layer in self.layers:
                x = layer(x)
        x = self.conv_sep(x.float() if self.fp16 else x)
        return self.features(x)


def _register(name: str, blocks: tuple[int, int, int, int], scale: int,
              aliases: tuple[str, ...]) -> Callable[..., MobileFaceNet]:
    def build(embedding_size: int = 512, fp16: bool = False) -> MobileFaceNet:
        return MobileFaceNet(embedding_size=embedding_size, blocks=blocks, scale=scale, fp16=fp16)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"arcface_torch {aliases[0]}: MobileFaceNet blocks {blocks}, scale {scale}."
    return register_model(build, aliases=aliases)


mobilefacenet = _register("mobilefacenet", (1, 4, 6, 2), 2, ("mbf",))
mobilefacenet_large = _register("mobilefacenet_large", (2, 8, 12, 4), 4, ("mbf_large",))
