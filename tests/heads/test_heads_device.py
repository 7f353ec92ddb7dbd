"""Same numbers on CUDA as on CPU (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from cdface.heads import MARGINS, create_head
from cdface.losses import ClosenessDiversityLoss
from cdface.miners import hard_negative_centres

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("name", sorted(MARGINS))
def test_head_matches_cpu(name: str) -> None:
    torch.manual_seed(0)
    head = create_head(name, 32, 50).double()
    x = torch.randn(16, 32, dtype=torch.float64) * 15
    y = torch.randint(0, 50, (16,))
    y[3] = -1
    cpu = head(x, y)
    gpu = head.to("cuda")(x.cuda(), y.cuda())
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits)
    torch.testing.assert_close(gpu.target_cosine.cpu(), cpu.target_cosine, equal_nan=True)
    for name_, buf in head.named_buffers():
        assert buf.device.type == "cuda", name_


@cuda
def test_cd_loss_and_hard_negatives_match_cpu() -> None:
    torch.manual_seed(0)
    easy, hard, centres = torch.randn(4, 7, 16), torch.randn(4, 1, 16), torch.randn(30, 16)
    loss = ClosenessDiversityLoss()
    want_loss = loss(easy, hard, centres)
    torch.testing.assert_close(loss(easy.cuda(), hard.cuda(), centres.cuda()).cpu(), want_loss)
    cosine, labels = torch.rand(8, 40), torch.tensor([1, 2, 3, 1, 5, 6, 7, 2])
    classes = torch.tensor([1, 2, 7])
    want = hard_negative_centres(cosine, labels, classes, 5)
    got = hard_negative_centres(cosine.cuda(), labels.cuda(), classes.cuda(), 5)
    assert got.device.type == "cuda" and got.cpu().tolist() == want.tolist()
