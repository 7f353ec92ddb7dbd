"""AdaFace's IR / IR-SE (mk-minchul/AdaFace `net.py`, shared by TFace's `model_irse.py` and CVLface's `iresnet`).

The same stage plan as face.evoLVe's IR (`cdface.models.ir`), but each block's residual branch has an extra
BatchNorm after its first conv: `res_layer` is BN -> conv3x3 -> **BN** -> PReLU -> conv3x3(stride) -> BN
(indices 0..5), the SE module is appended as `res_layer.se_block`, and the output BatchNorm1d has no affine
terms. State-dict keys follow that code exactly, so AdaFace's `.ckpt` files (after dropping their `model.`
prefix and `head.kernel`, see `cdface.models.released`), TFace's and CVLface's IR weights load with
`strict=True`.

Input contract: AdaFace's released models take **BGR** crops, `(x/255 - 0.5)/0.5` (its README and
`inference.py`'s `to_input`), which is this architecture's `input_cfg`; CVLface's releases of the same
network take RGB and say so in their own layout (`cdface.models.released`).
AdaFace's forward returns `(x / |x|, |x|)`; this one returns `x` (the same embedding, not normalised), as
every cdface backbone does.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from cdface.models.init import kaiming_init_
from cdface.models.ir import IR_STAGES, SEModule, ir_shortcut
from cdface.models.registry import register_model

__all__ = ["ADAFACE_INPUT_CFG", "AdaFaceBlock", "AdaFaceIR"]

# AdaFace README "Inference": BGR, normalised with mean 0.5 and std 0.5
ADAFACE_INPUT_CFG = {"input_size": (112, 112), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "color": "BGR"}
_WIDTHS = (64, 128, 256, 512)


class AdaFaceBlock(nn.Module):
    """AdaFace's `BasicBlockIR` (`se=True`: `BasicBlockIRSE`): residual branch + max-pool or conv+BN shortcut."""

    def __init__(self, in_channel: int, depth: int, stride: int, se: bool = False):
        super().__init__()
        self.shortcut_layer = ir_shortcut(in_channel, depth, stride)
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.BatchNorm2d(depth),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )
        if se:
            self.res_layer.add_module("se_block", SEModule(depth, 16))

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class AdaFaceIR(nn.Module):
    """AdaFace's `Backbone(input_size=(112, 112), num_layers, mode)` for num_layers 18, 34, 50, 100.

    Args:
        num_layers: 18, 34, 50 or 100 (AdaFace's IR_101 is `num_layers=100`).
        se: the IR-SE variant (`res_layer.se_block`).
        embedding_size: output dimension (512 in AdaFace; CVLface's `output_dim`).
        widths: the four stages' channels ((64, 128, 256, 512) in every release; narrower only for tests).
    Forward: (N, 3, 112, 112) float, BGR in [-1, 1] for AdaFace's weights -> (N, embedding_size), not normalised.
    """

    def __init__(self, num_layers: int, se: bool = False, embedding_size: int = 512,
                 widths: tuple[int, int, int, int] = _WIDTHS):
        super().__init__()
        if num_layers not in IR_STAGES or num_layers == 152:  # AdaFace's 152/200 use bottleneck blocks
            raise ValueError(f"num_layers must be 18, 34, 50 or 100, got {num_layers}")
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths needs 4 positive channel counts, got {widths}")
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, widths[0], (3, 3), 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0])
        )
        units: list[nn.Module] = []
        in_channel = widths[0]
        for depth, count in zip(widths, IR_STAGES[num_layers]):
            units.append(AdaFaceBlock(in_channel, depth, 2, se))
            units.extend(AdaFaceBlock(depth, depth, 1, se) for _ in range(count - 1))
            in_channel = depth
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(widths[3]),
            nn.Dropout(0.4),
            nn.Flatten(),
            nn.Linear(widths[3] * 7 * 7, embedding_size),
            nn.BatchNorm1d(embedding_size, affine=False),
        )
        kaiming_init_(self)
        self.input_cfg = dict(ADAFACE_INPUT_CFG)

    def forward(self, x: Tensor) -> Tensor:
        return self.output_layer(self.body(self.input_layer(x)))


def _register(num_layers: int, se: bool, name: str) -> Callable[..., AdaFaceIR]:
    def build(embedding_size: int = 512, widths: tuple[int, int, int, int] = _WIDTHS) -> AdaFaceIR:
        return AdaFaceIR(num_layers, se=se, embedding_size=embedding_size, widths=widths)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"AdaFace IR{'-SE' if se else ''}-{num_layers}: blocks {IR_STAGES[num_layers]}, an extra "
                     "BN in each residual branch; BGR input in [-1, 1].")
    return register_model(build)


adaface_ir18 = _register(18, False, "adaface_ir18")
adaface_ir34 = _register(34, False, "adaface_ir34")
adaface_ir50 = _register(50, False, "adaface_ir50")
adaface_ir101 = _register(100, False, "adaface_ir101")
adaface_ir_se50 = _register(50, True, "adaface_ir_se50")
adaface_ir_se101 = _register(100, True, "adaface_ir_se101")
