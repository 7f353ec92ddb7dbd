"""The cosine threshold at a chosen FAR (issue 24, item 6): the rule against sklearn's roc_curve, the refusal of
FARs a set cannot measure, and the table results.json stores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve as sk_roc_curve

from cdface.errors import ConfigError
from cdface.eval.far_threshold import far_threshold_table, threshold_at_far


def _pairs(seed: int, n: int = 2000, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.4
    cosine = np.where(same, rng.normal(0.6, 0.15, n), rng.normal(0.1, 0.12, n))
    if ties:  # quantised scores: many ties across genuine and impostor pairs
        cosine = np.round(cosine, 2)
    return same, cosine


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_threshold_is_the_lowest_roc_threshold_with_far_at_most_the_target(seed, ties):
    same, cosine = _pairs(seed, ties=ties)
    fpr, tpr, thresholds = sk_roc_curve(same, cosine, drop_intermediate=False)
    impostors = int((~same).sum())
    for far in (1.0 / impostors, 1e-3 if impostors >= 1000 else 0.01, 0.01, 0.05, 0.1, 0.5, 1.0):
        got = threshold_at_far(same, cosine, far)
        k = np.flatnonzero(fpr <= far)[-1]
        assert got.cosine == thresholds[k] and got.tar == tpr[k] and got.far == fpr[k]
        accepted = cosine[~same] >= got.cosine  # the decision rule: same when cos >= threshold
        assert accepted.sum() <= far * impostors + 1e-9
        lower = cosine[cosine < got.cosine]
        if lower.size:  # the next lower score would accept too many impostors
            assert (cosine[~same] >= lower.max()).sum() > far * impostors
        assert (got.impostors, got.genuines) == (impostors, int(same.sum()))


def test_a_far_below_one_over_the_impostors_is_refused_naming_the_count():
    same, cosine = _pairs(3, n=600)
    impostors = int((~same).sum())
    with pytest.raises(ConfigError, match=rf"FAR 0.0001 needs at least 10000 impostor pairs; lfw.bin has {impostors}"):
        threshold_at_far(same, cosine, 1e-4, set_name="lfw.bin")
    with pytest.raises(ConfigError, match="genuine and impostor pairs"):
        threshold_at_far(np.ones(4, bool), np.arange(4.0), 0.5)


def test_table_holds_each_measurable_level_and_null_below_one_over_the_impostors():
    same, cosine = _pairs(4, n=3000)
    impostors = int((~same).sum())
    table = far_threshold_table(same, cosine, (1e-6, 1e-4, 1e-3, 1e-2, 0.1))
    assert table["impostor_pairs"] == impostors and table["genuine_pairs"] == int(same.sum())
    assert table["levels"]["1e-06"] is None and table["levels"]["0.0001"] is None
    for level in (1e-3, 1e-2, 0.1):
        row = table["levels"][repr(level)]
        expected = threshold_at_far(same, cosine, level)
        assert (row["cosine"], row["far"], row["tar"]) == (expected.cosine, expected.far, expected.tar)
