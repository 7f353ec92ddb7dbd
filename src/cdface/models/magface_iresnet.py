"""MagFace's IResNet (IrvingMeng/MagFace `models/iresnet.py`): insightface's IResNet with BatchNorm eps 2e-5,
fed BGR crops in [0, 1].

The keys and shapes are those of `cdface.models.iresnet` (a MagFace backbone's state_dict is an IResNet's), so
what makes this a separate architecture is what the state_dict does not hold: every BatchNorm's epsilon (2e-5,
not 1e-5) and the input contract of MagFace's `inference/gen_feat.py` (`cv2.imread`, so BGR, then
`ToTensor()` + `Normalize(0, 1)`: x/255, no centring). Its dropout is `Dropout2d(0.4)`, inactive at inference.
A released checkpoint (`{'state_dict': {'features.module.*', 'fc.weight'}}`) is recognised by
`cdface.models.released`, which picks one of these names.
"""

from __future__ import annotations

from collections.abc import Callable

from cdface.models.iresnet import IRESNET_LAYERS, IResNet
from cdface.models.registry import register_model

__all__ = ["MAGFACE_BN_EPS", "MAGFACE_INPUT_CFG", "magface_iresnet18", "magface_iresnet34", "magface_iresnet50",
           "magface_iresnet100"]

MAGFACE_BN_EPS = 2e-5
# gen_feat.py: cv2.imread (BGR), ToTensor (x/255), Normalize(mean=0, std=1)
MAGFACE_INPUT_CFG = {"input_size": (112, 112), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "color": "BGR"}


def _register(depth: int) -> Callable[..., IResNet]:
    layers = IRESNET_LAYERS[f"iresnet{depth}"]

    def build(embedding_size: int = 512, widths: tuple[int, int, int, int] = (64, 128, 256, 512)) -> IResNet:
        model = IResNet(layers, embedding_size=embedding_size, bn_eps=MAGFACE_BN_EPS, widths=tuple(widths))
        model.input_cfg = dict(MAGFACE_INPUT_CFG)
        return model

    name = f"magface_iresnet{depth}"
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"MagFace iResNet{depth}: IResNet blocks {layers}, BN eps 2e-5, BGR input in [0, 1]."
    return register_model(build)


magface_iresnet18 = _register(18)
magface_iresnet34 = _register(34)
magface_iresnet50 = _register(50)
magface_iresnet100 = _register(100)
