"""The IR / IR-SE family of face.evoLVe (`model_irse.py`), as used by the paper's reference code.

State-dict keys follow face.evoLVe exactly (`input_layer.*`, `body.N.shortcut_layer.*`,
`body.N.res_layer.{0..5}`, `output_layer.{0,3,4}`), so checkpoints of face.evoLVe and of
Zacharynjust/FR-closeness-and-diversity (whose IR-100 is plain IR with blocks (3, 13, 30, 3) and an
output BatchNorm1d without affine parameters) load with `strict=True`. Unlike IResNet, each block's
stride sits on its second conv and an identity shortcut that downsamples is a 1x1 max-pool.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cdface.models.init import kaiming_init_
from cdface.models.registry import default_input_cfg, register_model

__all__ = ["IR_STAGES", "SEModule", "BottleneckIR", "BottleneckIRSE", "IRBackbone"]

IR_STAGES: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
_STAGE_DEPTHS = (64, 128, 256, 512)


class SEModule(nn.Module):
    """Squeeze-and-excitation with 1x1 convs (no bias), channel reduction `reduction`."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


def ir_shortcut(in_channel: int, depth: int, stride: int) -> nn.Module:
    """The IR block's shortcut (face.evoLVe's, AdaFace's): a 1x1 max-pool (a stride) when the width stays, else a
    strided 1x1 conv + BN."""
    if in_channel == depth:
        return nn.MaxPool2d(1, stride)
    return nn.Sequential(nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth))


class BottleneckIR(nn.Module):
    """BN -> conv3x3 -> PReLU -> conv3x3(stride) -> BN [-> SE], plus a max-pool or conv+BN shortcut."""

    def __init__(self, in_channel: int, depth: int, stride: int, se: bool = False):
        super().__init__()
        self.shortcut_layer = ir_shortcut(in_channel, depth, stride)
        res: list[nn.Module] = [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if se:
            res.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*res)

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class BottleneckIRSE(BottleneckIR):
    """The IR block with a squeeze-and-excitation module as `res_layer.5`."""

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__(in_channel, depth, stride, se=True)


class IRBackbone(nn.Module):
    """face.evoLVe's `Backbone(input_size, num_layers, mode)`.

    Args:
        num_layers: 18, 34, 50, 100 or 152.
        mode: "ir" or "ir_se".
        input_size: 112 or 224 (square); the fc input is 512*7*7 or 512*14*14.
        embedding_size: output dimension.
        dropout: before the fc; 0.4 in the paper's code (face.evoLVe used 0.5).
        output_affine: whether the final BatchNorm1d has weight/bias. False in the paper's code;
            True in face.evoLVe's original (pick the one matching your checkpoint).
        fp16, gradient_checkpointing, channels_last: as for IResNet (fp16 only acts on CUDA tensors).
    """

    def __init__(
        self,
        num_layers: int,
        mode: str = "ir",
        input_size: int | tuple[int, int] = 112,
        embedding_size: int = 512,
        dropout: float = 0.4,
        output_affine: bool = False,
        fp16: bool = False,
        gradient_checkpointing: bool = False,
        channels_last: bool = False,
    ):
        super().__init__()
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if size not in ((112, 112), (224, 224)):
            raise ValueError(f"input_size must be 112 or 224, got {input_size!r}")
        if num_layers not in IR_STAGES:
            raise ValueError(f"num_layers must be one of {sorted(IR_STAGES)}, got {num_layers}")
        if mode not in ("ir", "ir_se"):
            raise ValueError(f"mode must be 'ir' or 'ir_se', got {mode!r}")
        self.fp16 = bool(fp16)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.channels_last = bool(channels_last)
        block = BottleneckIRSE if mode == "ir_se" else BottleneckIR

        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        units: list[nn.Module] = []
        in_channel = 64
        for depth, count in zip(_STAGE_DEPTHS, IR_STAGES[num_layers]):
            units.append(block(in_channel, depth, 2))
            units.extend(block(depth, depth, 1) for _ in range(count - 1))
            in_channel = depth
        self.body = nn.Sequential(*units)
        spatial = size[0] // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(512 * spatial * spatial, embedding_size),
            nn.BatchNorm1d(embedding_size, affine=output_affine),
        )
        kaiming_init_(self)
        self.input_cfg = default_input_cfg(size)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, S, S) RGB in [-1, 1] -> (N, embedding_size), not normalised."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16 and x.is_cuda):
            x = self.input_layer(x)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                for unit in self.body:
                    x = checkpoint(unit, x, use_reentrant=False)
            else:
                x = self.body(x)
            x = self.output_layer[2](self.output_layer[1](self.output_layer[0](x)))
        x = self.output_layer[3](x.float() if self.fp16 else x)
        return self.output_layer[4](x)


def _register(num_layers: int, mode: str, aliases: tuple[str, ...]) -> Callable[..., IRBackbone]:
    """Register one depth/mode; every variant takes the same options as `IRBackbone`."""
    name = f"{mode}{num_layers}"

    def build(
        embedding_size: int = 512,
        input_size: int | tuple[int, int] = 112,
        dropout: float = 0.4,
        output_affine: bool = False,
        fp16: bool = False,
        gradient_checkpointing: bool = False,
        channels_last: bool = False,
    ) -> IRBackbone:
        return IRBackbone(
            num_layers,
            mode,
            input_size=input_size,
            embedding_size=embedding_size,
            dropout=dropout,
            output_affine=output_affine,
            fp16=fp16,
            gradient_checkpointing=gradient_checkpointing,
            channels_last=channels_last,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"face.evoLVe {mode.upper()}-{num_layers}: blocks {IR_STAGES[num_layers]}."
    return register_model(build, aliases=aliases)


ir18 = _register(18, "ir", ("ir_18",))
ir34 = _register(34, "ir", ("ir_34",))
ir50 = _register(50, "ir", ("ir_50",))
ir100 = _register(100, "ir", ("ir_100", "ir_101", "ir101"))
ir152 = _register(152, "ir", ("ir_152",))
ir_se50 = _register(50, "ir_se", ("ir_se_50",))
ir_se100 = _register(100, "ir_se", ("ir_se_100", "ir_se_101", "ir_se101"))
ir_se152 = _register(152, "ir_se", ("ir_se_152",))
