"""MTCNN's three networks (Zhang et al. 2016), written as functions of facenet-pytorch's state_dicts.

The weights were converted from the original Caffe/TensorFlow models; their dense layers read the last
feature map in (width, height, channel) order, so it is transposed before flattening. Each network takes
float32 (N, 3, H, W) RGB input scaled as ``(x - 127.5) / 128`` and returns the face probability (softmax of
two logits), the box offsets and (O-Net) the landmarks as fractions of the box.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from cdface.errors import FormatError

__all__ = ["MTCNNNets", "SHAPES"]

Tensor = torch.Tensor

# the layers each network needs, with their shapes (a wrong file is a one-line error, not a shape trace)
SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "pnet": {"conv1": (10, 3, 3, 3), "conv2": (16, 10, 3, 3), "conv3": (32, 16, 3, 3),
             "conv4_1": (2, 32, 1, 1), "conv4_2": (4, 32, 1, 1)},
    "rnet": {"conv1": (28, 3, 3, 3), "conv2": (48, 28, 3, 3), "conv3": (64, 48, 2, 2),
             "dense4": (128, 576), "dense5_1": (2, 128), "dense5_2": (4, 128)},
    "onet": {"conv1": (32, 3, 3, 3), "conv2": (64, 32, 3, 3), "conv3": (64, 64, 3, 3), "conv4": (128, 64, 2, 2),
             "dense5": (256, 1152), "dense6_1": (2, 256), "dense6_2": (4, 256), "dense6_3": (10, 256)},
}
_PRELUS = {"pnet": 3, "rnet": 4, "onet": 5}


def _check(name: str, state: Mapping[str, Tensor]) -> None:
    for layer, shape in SHAPES[name].items():
        weight, bias = state.get(f"{layer}.weight"), state.get(f"{layer}.bias")
        if weight is None or bias is None or tuple(weight.shape) != shape or tuple(bias.shape) != shape[:1]:
            raise FormatError(name, None, f"MTCNN {name} weights: {layer}.weight of shape {shape} and its bias")
    for k in range(1, _PRELUS[name] + 1):
        if f"prelu{k}.weight" not in state:
            raise FormatError(name, None, f"MTCNN {name} weights: prelu{k}.weight")


class MTCNNNets:
    """P-Net, R-Net and O-Net over the given state_dicts (``{"pnet": {...}, "rnet": {...}, "onet": {...}}``)."""

    def __init__(self, weights: Mapping[str, Mapping[str, Tensor]]) -> None:
        for name in SHAPES:
            _check(name, weights[name])
        self.p, self.r, self.o = (dict(weights[n]) for n in ("pnet", "rnet", "onet"))

    @staticmethod
    def _conv(x: Tensor, w: Mapping[str, Tensor], layer: str, prelu: str) -> Tensor:
        return F.prelu(F.conv2d(x, w[f"{layer}.weight"], w[f"{layer}.bias"]), w[f"{prelu}.weight"])

    @staticmethod
    def _flatten_whc(x: Tensor) -> Tensor:
        return x.permute(0, 3, 2, 1).flatten(1)  # flatten(1), not reshape(n, -1): an empty batch stays (0, F)

    def pnet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) -> face probability (N, H', W') and box offsets (N, 4, H', W'), one cell per 12x12
        window at stride 2 (H' = ceil((H - 2) / 2) - 4)."""
        w = self.p
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(self._conv(x, w, "conv1", "prelu1"), 2, 2, ceil_mode=True)
        x = self._conv(self._conv(x, w, "conv2", "prelu2"), w, "conv3", "prelu3")
        prob = torch.softmax(F.conv2d(x, w["conv4_1.weight"], w["conv4_1.bias"]), dim=1)[:, 1]
        return prob, F.conv2d(x, w["conv4_2.weight"], w["conv4_2.bias"])

    def rnet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, 24, 24) -> face probability (N,) and box offsets (N, 4)."""
        w = self.r
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(self._conv(x, w, "conv1", "prelu1"), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self._conv(x, w, "conv2", "prelu2"), 3, 2, ceil_mode=True)
        x = self._flatten_whc(self._conv(x, w, "conv3", "prelu3"))
        x = F.prelu(F.linear(x, w["dense4.weight"], w["dense4.bias"]), w["prelu4.weight"])
        prob = torch.softmax(F.linear(x, w["dense5_1.weight"], w["dense5_1.bias"]), dim=1)[:, 1]
        return prob, F.linear(x, w["dense5_2.weight"], w["dense5_2.bias"])

    def onet(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(N, 3, 48, 48) -> face probability (N,), box offsets (N, 4) and landmarks (N, 10) as
        ``[x1..x5, y1..y5]`` fractions of the box (MTCNN's order: image-left eye, image-right eye, nose,
        image-left mouth corner, image-right one)."""
        w = self.o
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(self._conv(x, w, "conv1", "prelu1"), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self._conv(x, w, "conv2", "prelu2"), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self._conv(x, w, "conv3", "prelu3"), 2, 2, ceil_mode=True)
        x = self._flatten_whc(self._conv(x, w, "conv4", "prelu4"))
        x = F.prelu(F.linear(x, w["dense5.weight"], w["dense5.bias"]), w["prelu5.weight"])
        prob = torch.softmax(F.linear(x, w["dense6_1.weight"], w["dense6_1.bias"]), dim=1)[:, 1]
        offsets = F.linear(x, w["dense6_2.weight"], w["dense6_2.bias"])
        return prob, offsets, F.linear(x, w["dense6_3.weight"], w["dense6_3.bias"])
