"""TransFace's ViT (DanJun6737/TransFace `backbones/vit.py`, ICCV 2023): insightface's face ViT with a patch gate.

Everything insightface's ViT has (`cdface.models.vit`, same keys and shapes), plus `senet`: after the final
LayerNorm the flattened tokens go through Linear(144 D -> 144, no bias), ReLU, Linear(144 -> 144, no bias),
Sigmoid, and each patch's token is scaled by its gate before the feature head. So a TransFace `model.pt` is not
an insightface ViT file: loaded as one, the gate would be dropped and the embeddings would differ. Input as
insightface's: 112x112 RGB, (x/255 - 0.5)/0.5 (TransFace `eval_ijbc.py`). TransFace's forward also returns the
gate's softmax and per-patch standard deviations (its training signals); this one returns the embedding.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from cdface.models.registry import register_model
from cdface.models.vit import VIT_SETTINGS, VisionTransformer, _autocast_off

__all__ = ["TransFaceViT"]


class TransFaceViT(VisionTransformer):
    """insightface's VisionTransformer (same arguments) with TransFace's patch gate `senet`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        tokens = self.num_patches
        self.senet = nn.Sequential(
            nn.Linear(self.embed_dim * tokens, tokens, bias=False), nn.ReLU(inplace=True),
            nn.Linear(tokens, tokens, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        features = self.forward_features(x)  # (B, P * D)
        # float32 as insightface's feature head, unless the whole model was cast to half (cdface export --fp16)
        features = features.to(self.senet[0].weight.dtype)
        with _autocast_off(features):
            gate = self.senet(features)  # (B, P)
            gated = features.view(len(features), self.num_patches, self.embed_dim) * gate.unsqueeze(-1)
            return self.feature(gated.flatten(1))


def _register(name: str, setting: str) -> Callable[..., TransFaceViT]:
    embed_dim, depth, num_heads, dp_rate, ratio = VIT_SETTINGS[setting]

    def build(embedding_size: int = 512, dropout: float = 0.0, drop_path_rate: float = dp_rate,
              mask_ratio: float = ratio) -> TransFaceViT:
        return TransFaceViT(embedding_size=embedding_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                            dropout=dropout, drop_path_rate=drop_path_rate, mask_ratio=mask_ratio)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"TransFace-{name[-1].upper()}: insightface {setting} + TransFace's patch gate."
    return register_model(build)


transface_s = _register("transface_s", "vit_s")
transface_b = _register("transface_b", "vit_b")
transface_l = _register("transface_l", "vit_l")


@register_model
def transface_tiny(embedding_size: int = 128, dropout: float = 0.0) -> TransFaceViT:
    """Test model: `vit_tiny`'s shape (dim 32, depth 2, 2 heads) with TransFace's patch gate."""
    return TransFaceViT(embedding_size=embedding_size, embed_dim=32, depth=2, num_heads=2, dropout=dropout)
