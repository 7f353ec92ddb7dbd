"""cdface.embedding: one flip-fused embedding for FaceEmbedder (eval, embed, compare), the trainer's periodic
verification and ablate; one L2 normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cdface import embedding
from cdface.embedding import flip_embed, l2_normalize


class _RowSum(nn.Module):
    """Embedding = each row's pixel sums weighted by column index: the mirror's embedding is predictable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cols = torch.arange(x.shape[3], dtype=x.dtype)
        return (x * cols).sum(dim=(2, 3))


def test_flip_embed_is_the_image_and_its_left_right_mirror():
    x = torch.randn(3, 3, 4, 5, dtype=torch.float64)
    plain, mirrored = flip_embed(_RowSum(), x)
    cols = torch.arange(5, dtype=torch.float64)
    torch.testing.assert_close(plain, (x * cols).sum(dim=(2, 3)))
    torch.testing.assert_close(mirrored, (x * cols.flip(0)).sum(dim=(2, 3)))  # width flipped, nothing else
    with pytest.raises(ValueError, match="N, 3, H, W"):
        flip_embed(_RowSum(), x[0])


def test_l2_normalize_rows_and_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_array_equal(l2_normalize(x), np.array([[0.6, 0.8], [0.0, 0.0]], np.float32))


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=8), nn.Flatten(), nn.Linear(4 * 14 * 14, 8)).eval()
    net.input_cfg = {"input_size": (112, 112), "mean": (0.5,) * 3, "std": (0.5,) * 3, "color": "RGB"}
    return net


def test_every_flip_path_goes_through_the_one_function(monkeypatch):
    """FaceEmbedder and the trainer's verification both call `flip_embed` and agree on the embeddings."""
    from cdface.inference import embedder as embedder_module
    from cdface.inference.embedder import FaceEmbedder
    from cdface.train import verification

    calls = []

    def counted(model, x):
        calls.append(tuple(x.shape))
        return embedding.flip_embed(model, x)

    monkeypatch.setattr(embedder_module, "flip_embed", counted)
    monkeypatch.setattr(verification, "flip_embed", counted)
    images = np.random.default_rng(0).integers(0, 256, size=(6, 112, 112, 3), dtype=np.uint8)
    net = _tiny()
    plain_a, flipped_a = FaceEmbedder(net, device="cpu", batch_size=6).embed_pair(images)
    plain_b, flipped_b = verification.embed_with_flip(net, images, torch.device("cpu"), batch_size=6)
    assert calls == [(6, 3, 112, 112), (6, 3, 112, 112)]
    np.testing.assert_allclose(plain_a, plain_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flipped_a, flipped_b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain_a, flipped_a)  # the mirror is a different image
