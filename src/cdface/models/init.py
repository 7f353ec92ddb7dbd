"""Weight initialisation shared by the IR and MobileFaceNet families (face.evoLVe / insightface convention)."""

from __future__ import annotations

from torch import nn


def kaiming_init_(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) convolutions and linears with zero biases; BatchNorm2d at weight 1, bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
