"""MarginHead and the factory: cosines, target scores, weight layout, kwargs plumbing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cdface.errors import ConfigError
from cdface.heads import MARGINS, HeadOutput, MarginHead, create_head, create_margin
from cdface.heads.arcface import ArcFaceMargin


def test_weight_layout_and_init() -> None:
    head = create_head("arcface", 64, 300)
    assert isinstance(head, MarginHead)
    assert head.weight.shape == (300, 64)
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert abs(head.weight.mean().item()) < 1e-3


def test_forward_cosine_target_and_logits() -> None:
    torch.manual_seed(0)
    head = create_head("cosface", 8, 5, s=10.0, m=0.25).double()
    x = torch.randn(4, 8, dtype=torch.float64) * 7
    y = torch.tensor([0, 3, 3, 4])
    out = head(x, y)
    assert isinstance(out, HeadOutput) and out.aux_loss is None
    w = head.weight.detach()
    for i in range(4):
        for j in range(5):
            want = float(x[i] @ w[j] / (x[i].norm() * w[j].norm()))
            assert out.cosine[i, j].item() == pytest.approx(want, abs=1e-12)
            margin = 0.25 if j == int(y[i]) else 0.0
            assert out.logits[i, j].item() == pytest.approx(10.0 * (want - margin), abs=1e-10)
    torch.testing.assert_close(out.target_cosine, out.cosine[torch.arange(4), y].detach())
    assert not out.target_cosine.requires_grad


def test_target_cosine_nan_for_label_minus_one() -> None:
    head = create_head("arcface", 4, 3)
    out = head(torch.randn(2, 4), torch.tensor([1, -1]))
    assert torch.isfinite(out.target_cosine[0]) and torch.isnan(out.target_cosine[1])


def test_every_registered_head_trains_a_step() -> None:
    torch.manual_seed(1)
    for name in MARGINS:
        head = create_head(name, 16, 7)
        x = (torch.randn(6, 16) * 20).requires_grad_(True)
        y = torch.tensor([0, 1, 2, 3, 4, 6])
        out = head(x, y)
        loss = F.cross_entropy(out.logits, y)
        if out.aux_loss is not None:
            loss = loss + out.aux_loss
        loss.backward()
        assert torch.isfinite(loss), name
        assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all(), name
    assert create_head("magface", 16, 7)(torch.randn(3, 16), torch.tensor([0, 1, 2])).aux_loss is not None


def test_half_precision_cosines_are_promoted() -> None:
    head = create_head("arcface", 8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(torch.randn(3, 8), torch.tensor([0, 1, 2]))
    assert out.cosine.dtype == torch.float32 and out.logits.dtype == torch.float32


def test_factory_kwargs_and_errors() -> None:
    margin = create_margin("ArcFace", s=32.0, m=0.3, easy_margin=True)
    assert isinstance(margin, ArcFaceMargin) and margin.s == 32.0 and margin.easy_margin
    head = create_head("arcface", 8, 4, init_std=0.5)
    assert head.weight.std().item() > 0.2
    with pytest.raises(ValueError, match="unknown margin"):
        create_head("sphereface", 8, 4)
    with pytest.raises(ConfigError, match=r"unknown \['margin'\] for cosface; allowed: s, m"):
        create_head("cosface", 8, 4, margin=0.3)
