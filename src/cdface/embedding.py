"""The embedding helpers every path shares: flip-fused test-time embedding, row L2 normalisation, and the
cosine of embeddings against class centres (``normalized_cosine``: the heads', the sharded head's and the
hard-negative miner's).

Flip fusion is the field's test-time augmentation (insightface's `verification.py` and IJB scripts, the paper's
repository, AdaFace's `pre_norm_vector_add`): a face is embedded together with its horizontal mirror and the two
un-normalised embeddings are summed. `flip_embed` is the one implementation, used by `FaceEmbedder`
(hence `cdface eval`, `embed`, `compare`), the trainer's periodic verification and `cdface ablate`; each caller
fuses the two halves the way its protocol's reference does (pairs: float64 sum; IJB: float32 sum).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["flip_embed", "l2_normalize", "normalized_cosine"]

Out = TypeVar("Out", Tensor, np.ndarray)


def flip_embed(model: Callable[[Tensor], Out], x: Tensor) -> tuple[Out, Out]:
    """(embeddings of `x`, embeddings of `x` mirrored left-right), both un-normalised, from one forward pass.

    `x`: a preprocessed float batch (N, 3, H, W) (normalised as the model expects); `model` maps such a
    batch to (N, D) embeddings (a tensor, or a numpy array such as `EmbeddingModel.forward_normalized`
    returns). The mirror flips the width axis (dim 3). The 2N images go through the model as one batch, so
    both halves see the same kernels (a backbone in eval mode embeds each image independently of the others).
    """
    if x.ndim != 4:
        raise ValueError(f"expected a preprocessed (N, 3, H, W) batch, got shape {tuple(x.shape)}")
    n = x.shape[0]
    both = model(torch.cat([x, x.flip(3)]))
    return both[:n], both[n:]


def l2_normalize(x: Any, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation of (..., D) features as float32 (rows of norm below `eps` are divided by
    `eps`, so zero rows stay zero). The protocols that must equal sklearn's `normalize` bit for bit use
    `cdface.eval._arrays.l2_normalize_rows` instead."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def normalized_cosine(embeddings: Tensor, weight: Tensor) -> Tensor:
    """(B, C) = normalize(x) @ normalize(W).T, clamped to [-1, 1].

    Half-precision results (autocast) are promoted to float32: margins take acos/sqrt of them.
    """
    cosine = F.linear(F.normalize(embeddings, dim=1), F.normalize(weight, dim=1))
    if cosine.dtype in (torch.float16, torch.bfloat16):
        cosine = cosine.float()
    return cosine.clamp(-1.0, 1.0)
