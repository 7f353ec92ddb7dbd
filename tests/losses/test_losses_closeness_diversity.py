"""ClosenessDiversityLoss against slow loops written from the paper's definition (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch

from cdface.losses import ClosenessDiversityLoss


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.sqrt((v * v).sum())


def _closeness_loop(easy: torch.Tensor) -> torch.Tensor:
    per_class = []
    for k in range(easy.shape[0]):
        pairs = [
            ((_unit(easy[k, i]) - _unit(easy[k, j])) ** 2).sum()
            for i in range(easy.shape[1])
            for j in range(i + 1, easy.shape[1])
        ]
        per_class.append(torch.stack(pairs).mean() if pairs else easy.sum() * 0)
    return torch.stack(per_class).mean()


def _diversity_loop(hard: torch.Tensor, centres: torch.Tensor, s: float) -> torch.Tensor:
    terms = []
    for k in range(hard.shape[0]):
        pool = centres[k] if centres.dim() == 3 else centres
        for n in range(hard.shape[1]):
            h = _unit(hard[k, n])
            exps = []
            for p in range(pool.shape[0]):
                cos = (h * _unit(pool[p])).sum()
                relu = torch.where(cos > 0, cos, cos * 0)
                exps.append(torch.exp(s * relu**2))
            terms.append(torch.log(torch.stack(exps).sum() / pool.shape[0]))
    return torch.stack(terms).mean()


def _inputs(k: int, ne: int, nh: int, centres_shape: tuple[int, ...], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    easy = (torch.randn(k, ne, 6, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    hard = (torch.randn(k, nh, 6, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    centres = torch.randn(*centres_shape, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    return easy, hard, centres


@pytest.mark.parametrize(
    ("k", "ne", "nh", "centres_shape"),
    [(3, 4, 1, (9,)), (2, 5, 3, (4,)), (3, 3, 2, (3, 5)), (2, 1, 2, (6,))],
    ids=["shared-pool", "several-hard", "per-class-centres", "one-easy"],
)
def test_values_and_gradients_match_loop(k: int, ne: int, nh: int, centres_shape: tuple[int, ...]) -> None:
    easy, hard, centres = _inputs(k, ne, nh, centres_shape)
    loss_fn = ClosenessDiversityLoss(s=64.0, wc=0.5, wd=1.0)
    got = loss_fn(easy, hard, centres)
    want = 0.5 * _closeness_loop(easy) + 1.0 * _diversity_loop(hard, centres, 64.0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(got, (easy, hard, centres))
    want_grads = torch.autograd.grad(want, (easy, hard, centres))
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


def test_components_and_single_easy_sample() -> None:
    easy, hard, centres = _inputs(2, 1, 1, (5,))
    loss_fn = ClosenessDiversityLoss(s=10.0, wc=0.7, wd=0.3)
    close, diverse = loss_fn.components(easy, hard, centres)
    assert close.item() == 0.0 and not torch.isnan(close)
    torch.testing.assert_close(diverse, _diversity_loop(hard, centres, 10.0))
    torch.testing.assert_close(loss_fn(easy, hard, centres), 0.7 * close + 0.3 * diverse)
    (grad,) = torch.autograd.grad(loss_fn(easy, hard, centres), easy, allow_unused=False)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_known_answers() -> None:
    e = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]])  # pairs: 2, 2, 4 -> mean 8/3
    h = torch.tensor([[[1.0, 0.0]]])
    p = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # cos 1, 0, -1 -> relu^2 1, 0, 0
    close, diverse = ClosenessDiversityLoss(s=3.0).components(e, h, p)
    assert close.item() == pytest.approx(8 / 3)
    assert diverse.item() == pytest.approx(math.log((math.exp(3.0) + 2) / 3))


def test_large_scale_is_stable_and_no_centres_gives_zero() -> None:
    easy, hard, centres = _inputs(2, 3, 2, (4,))
    aligned = torch.cat([hard.detach()[0], centres.detach()])
    value = ClosenessDiversityLoss(s=5000.0).components(easy, hard, aligned)[1]
    assert torch.isfinite(value)
    empty = ClosenessDiversityLoss().components(easy, hard, torch.empty(0, 6, dtype=torch.float64))[1]
    assert empty.item() == 0.0


def test_rejects_mismatched_per_class_centres() -> None:
    easy, hard, _ = _inputs(2, 3, 1, (4,))
    with pytest.raises(ValueError, match="centres"):
        ClosenessDiversityLoss()(easy, hard, torch.randn(3, 4, 6, dtype=torch.float64))


def test_half_precision_inputs_are_computed_in_float32() -> None:
    easy, hard, centres = (t.detach().float() for t in _inputs(3, 7, 1, (20,)))
    loss_fn = ClosenessDiversityLoss()
    full = loss_fn(easy, hard, centres)
    half = loss_fn(easy.half(), hard.half(), centres.half())
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=1e-2)
