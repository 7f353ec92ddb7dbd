"""The Vision Transformer of insightface's arcface_torch (`backbones/vit.py`), with its exact state_dict layout.

For 112x112 faces: a 9x9, stride-9 patch embedding (12 x 12 = 144 patches; the last 4 pixel rows and columns
are not seen, as in insightface), a learned position embedding, pre-norm blocks (LayerNorm, multi-head
self-attention without qkv bias, LayerNorm, MLP with ReLU6), a final LayerNorm and insightface's feature head
on the flattened tokens: Linear(144 D -> D, no bias), BatchNorm1d(eps 2e-5), Linear(D -> E, no bias),
BatchNorm1d(eps 2e-5). No class token. Keys (`pos_embed`, `mask_token`, `patch_embed.proj.*`,
`blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*`, `norm.*`, `feature.{0,1,2,3}.*`) and shapes
equal insightface's, so its published weights load with `strict=True` and give the same embeddings.

Training-only regularisers follow insightface: stochastic depth with rates rising linearly from 0 (first block)
to `drop_path_rate` (last block), and per-sample random patch masking: a random `1 - mask_ratio` share of the
patches goes through the blocks, and after the final LayerNorm the dropped positions are filled with the
learned `mask_token` before the feature head.

Precision follows insightface: the attention scores, softmax and weighted sum always run in float32 (autocast
off), the residual stream stays float32, and the final LayerNorm and the feature head run in float32. Under
ONNX export the attention is written out (matmul, softmax, matmul) instead of `scaled_dot_product_attention`,
which has no ONNX form before opset 14; a model cast to half (`cdface export --fp16`) runs in float16 except
the attention core.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cdface.errors import ConfigError
from cdface.models.registry import default_input_cfg, register_model

__all__ = ["VisionTransformer", "VIT_SETTINGS", "drop_path"]

# insightface arcface_torch `get_model`: (embed_dim, depth, num_heads, drop_path_rate, mask_ratio).
# insightface uses gradient checkpointing for vit_b/l/h; here it is the `gradient_checkpointing` option
# (configs set it), because a default a config could not switch off would be a trap.
VIT_SETTINGS: dict[str, tuple[int, int, int, float, float]] = {
    "vit_t": (256, 12, 8, 0.1, 0.1),
    "vit_t_dp005_mask0": (256, 12, 8, 0.05, 0.0),  # insightface's WebFace42M vit_t
    "vit_s": (512, 12, 8, 0.1, 0.1),
    "vit_s_dp005_mask_0": (512, 12, 8, 0.05, 0.0),  # WebFace42M vit_s
    "vit_b": (512, 24, 8, 0.1, 0.1),
    "vit_b_dp005_mask_005": (512, 24, 8, 0.05, 0.05),  # WebFace42M vit_b
    # insightface's get_model has only `vit_l_dp005_mask_005` for L; `vit_l` is that model (alias below).
    "vit_l": (768, 24, 8, 0.05, 0.05),
    "vit_h": (1024, 48, 8, 0.1, 0.0),
}
_ALIASES = {"vit_l": ("vit_l_dp005_mask_005",)}
_LN_EPS = 1e-5  # nn.LayerNorm's default, as insightface
_FEATURE_BN_EPS = 2e-5


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: zero a whole sample's residual branch with probability `p`, scale the kept by 1/(1-p).

    x: (B, ...). Identity when not training or p == 0 (timm's `drop_path` with scale_by_keep, which
    insightface uses). p == 1 drops every branch.
    """
    if p <= 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep if keep > 0.0 else x * mask


class DropPath(nn.Module):
    """`drop_path` as a module (no parameters); `p` is this block's rate."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


class Mlp(nn.Module):
    """fc1 -> ReLU6 -> dropout -> fc2 -> dropout (insightface's Mlp; ReLU6, not GELU)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU6()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _autocast_off(x: Tensor) -> torch.autocast:
    """A context that disables autocast on x's device type (meta tensors count as CPU)."""
    return torch.autocast(x.device.type if x.device.type in ("cuda", "cpu") else "cpu", enabled=False)


def _explicit_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v written out with matmul and softmax (what SDPA computes without a mask or
    dropout), so that the ONNX exporter needs no `scaled_dot_product_attention` op at any opset.
    q, k, v: (B, H, N, d) -> (B, H, N, d)."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    return torch.matmul(scores.softmax(dim=-1), v)


class Attention(nn.Module):
    """Multi-head self-attention: qkv = Linear(D, 3D, no bias); softmax(q k^T / sqrt(D/H)) v in float32; proj."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"ViT embed dim {dim} is not divisible by its {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        # (B, N, 3D) -> (3, B, H, N, D/H): the qkv weight's rows are [q; k; v], each head-major.
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        with _autocast_off(x):  # insightface computes the attention itself in float32 under any autocast
            if torch.onnx.is_in_onnx_export():  # SDPA has no ONNX form before opset 14 (insightface exports at 11)
                out = _explicit_attention(q.float(), k.float(), v.float())
            else:
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        # back to the block's dtype: a no-op in float32 and under autocast, float16 in a model cast to half
        out = out.to(x.dtype)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, dim)))

    def extra_macs(self, output: Tensor) -> int:
        """MACs of one sample's q k^T and attn v (no module holds them): 2 N^2 D, insightface's extra_gflops."""
        tokens, dim = output.shape[-2], output.shape[-1]
        return 2 * tokens * tokens * dim


class Block(nn.Module):
    """Pre-norm transformer block: x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float, drop_path_rate: float):
        super().__init__()
        # insightface registers both norms first; the same order gives its state_dict order
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.attn = Attention(dim, num_heads, dropout)
        self.drop_path = DropPath(drop_path_rate)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Conv2d(3, D, kernel = stride = patch) then (B, D, h, w) -> (B, h*w, D), row-major patches."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, in_channels: int = 3):
        super().__init__()
        self.img_size = int(img_size)
        self.num_patches = (self.img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """insightface's face ViT. Input (B, 3, 112, 112) RGB in [-1, 1] -> (B, embedding_size), not normalised.

    Args:
        embedding_size: output dimension (insightface's `num_classes` of the ViT, its `num_features`).
        embed_dim, depth, num_heads, mlp_ratio, patch_size, img_size: the transformer's shape.
        dropout: insightface's `drop_rate` (after the position embedding, the attention projection and both
            MLP layers); 0 in every insightface model.
        drop_path_rate: stochastic depth of the last block; block i gets drop_path_rate * i / (depth - 1).
        mask_ratio: share of patches dropped per sample in training (0 = off). insightface's forward calls its
            `random_masking` without passing the ratio, so there any ratio > 0 drops 10% (keeps int(0.9 * 144)
            = 129 patches); here the given ratio is used. Pass 0.1 to train as insightface's code does.
        fp16 / bf16: on CUDA, run the patch tokens' linear layers (qkv, proj, MLP) under autocast to float16 /
            bfloat16, as insightface's ViT does always on CUDA; the attention core, the residual stream, the
            final LayerNorm and the feature head stay float32. No effect on CPU tensors (the iresnet
            convention), so CPU numbers are the float32 ones.
        gradient_checkpointing: recompute each block in backward (training only); insightface turns it on for
            vit_b / vit_l / vit_h. Stochastic depth draws the same masks on recompute (RNG state preserved).
    """

    def __init__(
        self,
        embedding_size: int = 512,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        patch_size: int = 9,
        img_size: int = 112,
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        mask_ratio: float = 0.0,
        fp16: bool = False,
        bf16: bool = False,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        if fp16 and bf16:
            raise ConfigError("ViT: fp16 and bf16 are exclusive; choose one")
        if not 0.0 <= mask_ratio < 1.0:
            raise ConfigError(f"ViT mask_ratio must be in [0, 1), got {mask_ratio}")
        if not 0.0 <= drop_path_rate <= 1.0 or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"ViT drop_path_rate must be in [0, 1] and dropout in [0, 1), got "
                              f"{drop_path_rate} and {dropout}")
        if min(embed_dim, depth, num_heads, patch_size) < 1 or img_size < patch_size:
            raise ConfigError("ViT embed_dim, depth, num_heads and patch_size must be positive, patch <= image")
        self.embed_dim = int(embed_dim)
        self.mask_ratio = float(mask_ratio)
        self.drop_path_rate = float(drop_path_rate)
        self.fp16, self.bf16 = bool(fp16), bool(bf16)
        self.gradient_checkpointing = bool(gradient_checkpointing)

        # Registration order gives insightface's state_dict order: pos_embed, mask_token, patch_embed, ...
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim)
        self.num_patches = self.patch_embed.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(dropout)
        # insightface's linspace(0, rate, depth), in Python so that building on the meta device works
        rates = [drop_path_rate * i / (depth - 1) for i in range(depth)] if depth > 1 else [0.0]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, dropout, r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=_LN_EPS)
        self.feature = nn.Sequential(
            nn.Linear(embed_dim * self.num_patches, embed_dim, bias=False),
            nn.BatchNorm1d(embed_dim, eps=_FEATURE_BN_EPS),
            nn.Linear(embed_dim, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size, eps=_FEATURE_BN_EPS),
        )
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self._init_weights()
        self.input_cfg = default_input_cfg((img_size, img_size))

    def _init_weights(self) -> None:
        """insightface: linears trunc-normal(0.02) with zero bias, LayerNorm 1/0, pos_embed trunc-normal(0.02),
        mask_token normal(0.02); the patch conv and the BatchNorms keep PyTorch's defaults."""
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """insightface's list (its trainer does not use it: AdamW decays every parameter there)."""
        return {"pos_embed"}

    def _masking(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Keep a random int(L (1 - mask_ratio)) patches per sample: (B, keep, D) tokens, (B, L) restore order.

        The draw is insightface's (torch.rand(B, L), argsort; the smallest noise is kept), so one seed gives
        the same masks as insightface at the same ratio.
        """
        batch, length, dim = tokens.shape
        keep = int(length * (1 - self.mask_ratio))
        order = torch.argsort(torch.rand(batch, length, device=tokens.device), dim=1)
        restore = torch.argsort(order, dim=1)
        kept = torch.gather(tokens, 1, order[:, :keep].unsqueeze(-1).expand(-1, -1, dim))
        return kept, restore

    def _amp_dtype(self, x: Tensor) -> torch.dtype | None:
        if not x.is_cuda:
            return None
        return torch.float16 if self.fp16 else torch.bfloat16 if self.bf16 else None

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, num_patches * embed_dim): the normalised tokens (mask tokens in dropped places)."""
        batch = x.shape[0]
        x = self.pos_drop(self.patch_embed(x) + self.pos_embed)
        masking = self.training and self.mask_ratio > 0
        if masking:
            x, restore = self._masking(x)
        amp = self._amp_dtype(x)
        with torch.autocast("cuda", dtype=amp or torch.float16, enabled=amp is not None):
            for block in self.blocks:
                if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
        x = self.norm(x.to(self.norm.weight.dtype))  # float32, unless the whole model was cast to half
        if masking:
            fill = self.mask_token.to(x.dtype).expand(batch, self.num_patches - x.shape[1], -1)
            x = torch.gather(torch.cat([x, fill], dim=1), 1, restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        return x.reshape(batch, self.num_patches * self.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, 112, 112) RGB in [-1, 1] -> (B, embedding_size), not normalised."""
        features = self.forward_features(x)
        with _autocast_off(features):  # insightface's feature head runs in float32
            return self.feature(features.to(self.feature[0].weight.dtype))


def _register(name: str) -> Callable[..., VisionTransformer]:
    """Register one insightface setting; every name takes the same options, with that setting's defaults."""
    embed_dim, depth, num_heads, dp_rate, ratio = VIT_SETTINGS[name]

    def build(
        embedding_size: int = 512,
        dropout: float = 0.0,
        drop_path_rate: float = dp_rate,
        mask_ratio: float = ratio,
        fp16: bool = False,
        bf16: bool = False,
        gradient_checkpointing: bool = False,
    ) -> VisionTransformer:
        return VisionTransformer(
            embedding_size=embedding_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            dropout=dropout,
            drop_path_rate=drop_path_rate,
            mask_ratio=mask_ratio,
            fp16=fp16,
            bf16=bf16,
            gradient_checkpointing=gradient_checkpointing,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"insightface {name}: ViT, patch 9, dim {embed_dim}, depth {depth}, {num_heads} heads, "
                     f"drop path {dp_rate:g}, mask ratio {ratio:g}.")
    return register_model(build, aliases=_ALIASES.get(name, ()))


vit_t = _register("vit_t")
vit_t_dp005_mask0 = _register("vit_t_dp005_mask0")
vit_s = _register("vit_s")
vit_s_dp005_mask_0 = _register("vit_s_dp005_mask_0")
vit_b = _register("vit_b")
vit_b_dp005_mask_005 = _register("vit_b_dp005_mask_005")
vit_l = _register("vit_l")
vit_h = _register("vit_h")


@register_model
def vit_tiny(
    embedding_size: int = 128,
    dropout: float = 0.0,
    drop_path_rate: float = 0.1,
    mask_ratio: float = 0.1,
    fp16: bool = False,
    bf16: bool = False,
    gradient_checkpointing: bool = False,
) -> VisionTransformer:
    """Pipeline-test ViT (CPU tests): insightface's layout at dim 32, depth 2, 2 heads; vit_t's regularisers."""
    return VisionTransformer(
        embedding_size=embedding_size, embed_dim=32, depth=2, num_heads=2, dropout=dropout,
        drop_path_rate=drop_path_rate, mask_ratio=mask_ratio, fp16=fp16, bf16=bf16,
        gradient_checkpointing=gradient_checkpointing,
    )
