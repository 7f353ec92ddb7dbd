"""Each margin's logits against a direct per-entry formula (math module, float64), edge cases included."""

from __future__ import annotations

import math

import pytest
import torch

from cdface.heads import (
    AdaFaceMargin,
    ArcFaceMargin,
    CombinedMargin,
    CosFaceMargin,
    CurricularFaceMargin,
    MagFaceMargin,
)

S = 64.0


def _cosines() -> tuple[torch.Tensor, torch.Tensor]:
    """Rows covering: ordinary targets, cos = +1 and -1, theta + m > pi, negative target, label -1."""
    cos = torch.tensor(
        [
            [0.30, -0.20, 0.10, 0.50],
            [1.00, 0.20, -0.30, 0.00],
            [0.10, -1.00, 0.40, 0.20],
            [-0.95, 0.10, 0.20, 0.30],  # theta_y + 0.5 > pi for ArcFace
            [0.05, -0.30, 0.25, 0.90],
            [0.70, 0.60, 0.50, 0.40],  # label -1: untouched
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 0, 1, 0, 2, -1])
    return cos, labels


def _expected(cos: torch.Tensor, labels: torch.Tensor, target_fn, scale: float = S) -> torch.Tensor:
    out = cos.clone() * scale
    for i in range(cos.shape[0]):
        y = int(labels[i])
        if y >= 0:
            out[i, y] = scale * target_fn(i, float(cos[i, y]))
    return out


def _arc_reference(c: float, m: float) -> float:
    if c > math.cos(math.pi - m):
        return math.cos(math.acos(c) + m)
    return c - math.sin(math.pi - m) * m


def test_arcface_matches_insightface_formula() -> None:
    cos, labels = _cosines()
    got = ArcFaceMargin(s=S, m=0.5)(cos, labels)
    want = _expected(cos, labels, lambda i, c: _arc_reference(c, 0.5))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)  # 1e-6 value floor at |cos| = 1, times s
    # the theta + m > pi row takes the linear fallback, not cos(theta + m)
    assert got[3, 0].item() == pytest.approx(S * (-0.95 - math.sin(math.pi - 0.5) * 0.5), abs=1e-9)


def test_arcface_easy_margin() -> None:
    cos, labels = _cosines()
    got = ArcFaceMargin(s=S, m=0.5, easy_margin=True)(cos, labels)
    want = _expected(cos, labels, lambda i, c: math.cos(math.acos(c) + 0.5) if c > 0 else c)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_label_minus_one_rows_untouched_by_every_margin() -> None:
    cos, labels = _cosines()
    norms = torch.full((6, 1), 30.0, dtype=torch.float64)
    for margin in (
        ArcFaceMargin(),
        CosFaceMargin(),
        CombinedMargin(m1=1.1, m2=0.2, m3=0.1),
        CurricularFaceMargin(),
        AdaFaceMargin(),
        MagFaceMargin(),
    ):
        got = margin(cos, labels, norms)
        torch.testing.assert_close(got[5], S * cos[5], msg=type(margin).__name__)


def test_cosface() -> None:
    cos, labels = _cosines()
    got = CosFaceMargin(s=S, m=0.4)(cos, labels)
    torch.testing.assert_close(got, _expected(cos, labels, lambda i, c: c - 0.4))


@pytest.mark.parametrize(("m1", "m2", "m3"), [(1.0, 0.5, 0.0), (1.0, 0.0, 0.35), (1.2, 0.3, 0.1)])
def test_combined_margin(m1: float, m2: float, m3: float) -> None:
    cos, labels = _cosines()
    got = CombinedMargin(s=S, m1=m1, m2=m2, m3=m3)(cos, labels)
    want = _expected(cos, labels, lambda i, c: math.cos(m1 * math.acos(c) + m2) - m3)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=0)


def test_combined_interclass_filtering() -> None:
    cos, labels = _cosines()
    thr = 0.35
    got = CombinedMargin(s=S, m1=1.0, m2=0.0, m3=0.2, interclass_filtering_threshold=thr)(cos, labels)
    want = cos.clone()
    for i in range(cos.shape[0]):
        for j in range(cos.shape[1]):
            if j == int(labels[i]):
                want[i, j] = cos[i, j] - 0.2
            elif cos[i, j] > thr:
                want[i, j] = 0.0
    torch.testing.assert_close(got, S * want)


def test_gradients_finite_at_unit_cosines() -> None:
    cos, labels = _cosines()
    norms = torch.full((6, 1), 50.0, dtype=torch.float64)
    for margin in (
        ArcFaceMargin(),
        ArcFaceMargin(easy_margin=True),
        CombinedMargin(m1=1.2, m2=0.3, m3=0.1),
        CurricularFaceMargin(),
        AdaFaceMargin(),
        MagFaceMargin(easy_margin=False),
    ):
        x = cos.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(margin(x, labels, norms).sum(), x)
        assert torch.isfinite(grad).all(), type(margin).__name__


def test_arcface_gradient_matches_analytic_derivative() -> None:
    cos = torch.tensor([[0.3, 0.1], [0.2, -0.9]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1])
    (grad,) = torch.autograd.grad(ArcFaceMargin(s=1.0, m=0.5)(cos, labels).sum(), cos)
    c = 0.3  # d/dc cos(acos c + m) = cos m + c sin m / sqrt(1 - c^2)
    assert grad[0, 0].item() == pytest.approx(math.cos(0.5) + c * math.sin(0.5) / math.sqrt(1 - c * c))
    assert grad[1, 1].item() == pytest.approx(1.0)  # the linear fallback
    assert grad[0, 1].item() == pytest.approx(1.0)


def test_curricularface_t_update_and_modulation() -> None:
    margin = CurricularFaceMargin(s=S, m=0.5)
    cos, labels = _cosines()
    positive = labels >= 0
    margin(cos, labels)
    mean1 = cos[positive.nonzero().squeeze(1), labels[positive]].mean().item()
    t1 = 0.01 * mean1
    assert margin.t.item() == pytest.approx(t1)

    cos2 = torch.tensor([[0.2, 0.9, -0.1], [0.6, 0.1, 0.8], [0.0, 0.3, 0.1]], dtype=torch.float64)
    labels2 = torch.tensor([0, 2, -1])
    got = margin(cos2, labels2)
    t2 = 0.99 * t1 + 0.01 * (0.2 + 0.8) / 2
    assert margin.t.item() == pytest.approx(t2)
    want = cos2.clone()
    for i in range(3):
        y = int(labels2[i])
        if y < 0:
            continue
        c = float(cos2[i, y])
        with_margin = math.cos(math.acos(c) + 0.5)
        for j in range(3):
            if j == y:
                want[i, j] = _arc_reference(c, 0.5)
            elif cos2[i, j] > with_margin:
                want[i, j] = cos2[i, j] * (t2 + cos2[i, j])
    torch.testing.assert_close(got, S * want)
    assert got[0, 1].item() != pytest.approx(S * 0.9)  # the hard negative really was modulated

    margin.eval()
    margin(cos2, labels2)
    assert margin.t.item() == pytest.approx(t2)  # no update outside training


def _adaface_reference(c: float, norm: float, mean: float, std: float, m=0.4, h=0.333, eps=1e-3) -> float:
    c = min(max(c, -1 + eps), 1 - eps)
    z = min(max(h * (min(max(norm, 0.001), 100.0) - mean) / (std + eps), -1.0), 1.0)
    theta = min(max(math.acos(c) - m * z, eps), math.pi - eps)
    return math.cos(theta) - (m + m * z)


@pytest.mark.parametrize("t_alpha", [0.01, 0.5])
def test_adaface_norm_stats_and_logits(t_alpha: float) -> None:
    cos, labels = _cosines()
    norms = torch.tensor([[5.0], [20.0], [35.0], [60.0], [0.0001], [200.0]], dtype=torch.float64)
    margin = AdaFaceMargin(s=S, m=0.4, h=0.333, t_alpha=t_alpha)
    got = margin(cos, labels, norms)
    clipped = [min(max(float(n), 0.001), 100.0) for n in norms]
    mean = sum(clipped) / len(clipped)
    std = math.sqrt(sum((n - mean) ** 2 for n in clipped) / (len(clipped) - 1))
    run_mean = t_alpha * mean + (1 - t_alpha) * 20.0
    run_std = t_alpha * std + (1 - t_alpha) * 100.0
    assert margin.batch_mean.item() == pytest.approx(run_mean)
    assert margin.batch_std.item() == pytest.approx(run_std)
    want = cos.clamp(-1 + 1e-3, 1 - 1e-3).clone() * S
    for i in range(cos.shape[0]):
        y = int(labels[i])
        if y >= 0:
            want[i, y] = S * _adaface_reference(float(cos[i, y]), float(norms[i]), run_mean, run_std)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_adaface_requires_norms_and_freezes_stats_in_eval() -> None:
    cos, labels = _cosines()
    margin = AdaFaceMargin().eval()
    with pytest.raises(ValueError, match="norms"):
        margin(cos, labels)
    margin(cos, labels, torch.full((6, 1), 7.0, dtype=torch.float64))
    assert margin.batch_mean.item() == 20.0 and margin.batch_std.item() == 100.0


@pytest.mark.parametrize("easy_margin", [True, False])
def test_magface_logits(easy_margin: bool) -> None:
    cos, labels = _cosines()
    norms = torch.tensor([[5.0], [10.0], [60.0], [110.0], [150.0], [30.0]], dtype=torch.float64)
    got = MagFaceMargin(s=S, easy_margin=easy_margin)(cos, labels, norms)

    def target(i: int, c: float) -> float:
        a = min(max(float(norms[i]), 10.0), 110.0)
        m = (0.8 - 0.45) / (110.0 - 10.0) * (a - 10.0) + 0.45
        with_margin = math.cos(math.acos(c) + m)
        if easy_margin:
            return with_margin if c > 0 else c
        return with_margin if c > math.cos(math.pi - m) else c - math.sin(math.pi - m) * m

    torch.testing.assert_close(got, _expected(cos, labels, target), atol=1e-4, rtol=0)


def test_magface_aux_loss_value_and_gradient() -> None:
    norms = torch.tensor([[5.0], [20.0], [110.0], [300.0]], dtype=torch.float64, requires_grad=True)
    margin = MagFaceMargin(lambda_g=35.0)
    aux = margin.aux_loss(norms)
    clamped = [10.0, 20.0, 110.0, 110.0]
    want = 35.0 * sum(a / 110.0**2 + 1.0 / a for a in clamped) / 4
    assert aux.item() == pytest.approx(want)
    (grad,) = torch.autograd.grad(aux, norms)
    assert grad[1, 0].item() == pytest.approx(35.0 / 4 * (1 / 110.0**2 - 1 / 20.0**2))
    assert grad[0, 0].item() == 0.0 and grad[3, 0].item() == 0.0  # clamped: no gradient
    assert ArcFaceMargin().aux_loss(norms) is None
