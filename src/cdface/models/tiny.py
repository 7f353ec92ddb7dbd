"""A narrow IResNet for the CPU quickstart and unit tests: the same block and layout, 1/4 of the width."""

from __future__ import annotations

from torch import Tensor, nn

from cdface.models.iresnet import IBasicBlock
from cdface.models.registry import default_input_cfg, register_model

_BN_EPS = 1e-5


class TinyIResNet(nn.Module):
    """IResNet with widths (16, 32, 64, 128) and one block a stage: ~25 MMAC, trains at hundreds of
    images/s on two CPU cores. Not a model to publish numbers with; a model to exercise the pipeline."""

    def __init__(
        self, embedding_size: int = 128, widths: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.0
    ):
        super().__init__()
        self.inplanes = widths[0]
        # A stride-2 stem (112 -> 56) and a stride-1 last stage keep the 7x7 map at a fifth of the cost.
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=_BN_EPS)
        self.prelu = nn.PReLU(widths[0])
        self.layer1 = self._make_layer(widths[0])
        self.layer2 = self._make_layer(widths[1])
        self.layer3 = self._make_layer(widths[2])
        self.layer4 = self._make_layer(widths[3], stride=1)
        self.bn2 = nn.BatchNorm2d(widths[3], eps=_BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(widths[3] * 7 * 7, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=_BN_EPS)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.input_cfg = default_input_cfg((112, 112))

    def _make_layer(self, planes: int, stride: int = 2) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes, eps=_BN_EPS),
        )
        block = IBasicBlock(self.inplanes, planes, stride=stride, downsample=downsample)
        self.inplanes = planes
        return nn.Sequential(block)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x).flatten(1))
        return self.features(self.fc(x))


@register_model
def iresnet_tiny(embedding_size: int = 128, dropout: float = 0.0) -> TinyIResNet:
    """Pipeline-test backbone (CPU quickstart, unit tests)."""
    return TinyIResNet(embedding_size=embedding_size, dropout=dropout)
