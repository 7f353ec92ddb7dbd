"""hard_negative_centres against a brute-force loop over classes."""

from __future__ import annotations

import pytest
import torch

from cdface.miners import hard_negative_centres


def _reference(cosine: torch.Tensor, labels: list[int], classes: list[int], np_: int) -> list[list[int]]:
    out = []
    for y in classes:
        row = max(i for i, lab in enumerate(labels) if lab == y)
        ranked = sorted((c for c in range(cosine.shape[1]) if c != y), key=lambda c: -float(cosine[row, c]))
        out.append(ranked[:np_])
    return out


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cosine = torch.rand(12, 30, generator=g) * 2 - 1
    labels = [3, 7, 3, 11, 7, 20, 3, 0, 11, 29, 5, 7]
    return cosine, labels


def test_per_class_matches_brute_force() -> None:
    cosine, labels = _batch()
    classes = [3, 7, 29, 0]
    got = hard_negative_centres(cosine, torch.tensor(labels), torch.tensor(classes), 6, per_class=True)
    assert got.shape == (4, 6) and got.dtype == torch.int64
    assert got.tolist() == _reference(cosine, labels, classes, 6)


def test_union_excludes_selected_classes() -> None:
    cosine, labels = _batch(1)
    classes = [3, 7, 11]
    got = hard_negative_centres(cosine, torch.tensor(labels), torch.tensor(classes), 8)
    want = sorted({c for row in _reference(cosine, labels, classes, 8) for c in row} - set(classes))
    assert got.tolist() == want


def test_num_negatives_is_clamped_and_missing_class_raises() -> None:
    cosine, labels = _batch(2)
    got = hard_negative_centres(cosine, torch.tensor(labels), torch.tensor([20]), 1000, per_class=True)
    assert got.shape == (1, 29) and 20 not in got.tolist()[0]
    union = hard_negative_centres(cosine, torch.tensor(labels), torch.tensor([20, 5]), 1000)
    assert union.tolist() == [c for c in range(30) if c not in (20, 5)]
    with pytest.raises(ValueError, match="no row"):
        hard_negative_centres(cosine, torch.tensor(labels), torch.tensor([4]), 5)
