"""`cdface data make-pairs`: a seeded, balanced 10-fold pair set from identity folders (issue 24, item 8)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import run_cdface
from PIL import Image

from cdface.data.make_pairs import draw_pairs, make_pair_set, max_pairs
from cdface.data.pairs_bin import load_bin
from cdface.errors import ConfigError


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def _check_layout(labels: np.ndarray, drawn, folds: int) -> None:
    n = len(drawn.issame)
    half = n // folds // 2
    expected = np.tile(np.r_[np.ones(half, bool), np.zeros(half, bool)], folds)  # per fold: same, then different
    assert drawn.issame.tolist() == expected.tolist()
    a, b = labels[drawn.pairs[:, 0]], labels[drawn.pairs[:, 1]]
    assert ((a == b) == drawn.issame).all()
    assert (drawn.pairs[:, 0] != drawn.pairs[:, 1]).all()
    unordered = {tuple(sorted(p)) for p in drawn.pairs.tolist()}
    assert len(unordered) == n  # no pair twice, in either order
    assert drawn.fold.tolist() == np.repeat(np.arange(folds), 2 * half).tolist()


def test_draw_pairs_is_balanced_seeded_and_never_repeats_a_pair():
    labels = _labels([2, 5, 9, 3, 4, 7, 2, 6])  # 8 identities: too few for disjoint 10 folds
    drawn = draw_pairs(labels, 160, folds=10, seed=4)
    _check_layout(labels, drawn, 10)
    assert not drawn.disjoint
    again = draw_pairs(labels, 160, folds=10, seed=4)
    assert again.pairs.tolist() == drawn.pairs.tolist()
    assert draw_pairs(labels, 160, folds=10, seed=5).pairs.tolist() != drawn.pairs.tolist()


def test_folds_are_identity_disjoint_when_there_are_enough_identities():
    rng = np.random.default_rng(0)
    labels = _labels(rng.integers(2, 9, size=30).tolist() + [1, 1, 1])  # 30 identities with 2+ images
    drawn = draw_pairs(labels, 120, folds=10, seed=1)
    _check_layout(labels, drawn, 10)
    assert drawn.disjoint
    fold_of_identity: dict[int, set[int]] = {}
    for fold, pair in zip(drawn.fold, drawn.pairs):
        for label in labels[pair]:
            fold_of_identity.setdefault(int(label), set()).add(int(fold))
    assert all(len(folds) == 1 for folds in fold_of_identity.values())
    with pytest.raises(ConfigError, match="identity-disjoint folds need 20"):
        draw_pairs(_labels([3] * 12), 40, folds=10, disjoint=True)


def test_same_pairs_take_identities_about_equally_however_many_images_they_have():
    labels = _labels([60, 6, 6, 6])  # 1770 same pairs of identity 0, 15 of each other identity
    drawn = draw_pairs(labels, 60, folds=10, seed=0, disjoint=False)  # 30 same pairs
    same = drawn.pairs[drawn.issame]
    share_big = float(np.mean(labels[same[:, 0]] == 0))
    assert share_big < 0.5  # uniform over pairs would give about 1770 / 1815 = 0.98; over identities about 1/4


def test_requests_beyond_the_distinct_pairs_are_refused_and_max_pairs_says_how_many():
    labels = _labels([2, 2, 3])  # 1 + 1 + 3 = 5 distinct same pairs
    assert max_pairs(labels, folds=1) == 10
    assert max_pairs(labels, folds=2) == 8
    draw_pairs(labels, 10, folds=1)
    with pytest.raises(ConfigError, match="5 distinct same-identity"):
        draw_pairs(labels, 12, folds=1)
    with pytest.raises(ConfigError, match="multiple of 2 x folds = 20"):
        draw_pairs(labels, 30, folds=10)


def _folder(root: Path, counts: dict[str, int]) -> dict[str, list[Path]]:
    rng = np.random.default_rng(7)
    out: dict[str, list[Path]] = {}
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            path = root / name / (f"{i}.png" if i % 3 else f"{i}.jpg")
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(path)
            out.setdefault(name, []).append(path)
    return out


def test_make_pair_set_writes_a_bin_both_readers_read_with_the_listed_images(tmp_path):
    files = _folder(tmp_path / "faces", {f"id{i}": 4 for i in range(6)})
    summary = make_pair_set(tmp_path / "faces", tmp_path / "out" / "pairs.bin", num_pairs=40, folds=2, seed=3)
    assert (summary.pairs, summary.same, summary.folds, summary.disjoint) == (40, 20, 2, True)  # 3 identities per fold
    pair_set = load_bin(summary.out)
    with open(summary.out, "rb") as handle:  # our own file: insightface's loader
        bins, issame = pickle.load(handle, encoding="bytes")
    assert list(issame) == pair_set.issame.tolist() == [True] * 10 + [False] * 10 + [True] * 10 + [False] * 10
    assert [bytes(b) for b in bins] == [bytes(b) for b in pair_set.images]
    rows = [line.split("\t") for line in summary.listing.read_text().splitlines()[1:]]
    assert len(rows) == 40
    for k, (fold, same, a, b) in enumerate(rows):
        assert int(fold) == k // 20 + 1 and bool(int(same)) == issame[k]
        assert (a.split("/")[0] == b.split("/")[0]) == issame[k]
        assert bins[2 * k] == (tmp_path / "faces" / a).read_bytes()  # JPEG and PNG bytes kept as they are
        assert bins[2 * k + 1] == (tmp_path / "faces" / b.strip()).read_bytes()
    assert sum(len(v) for v in files.values()) == summary.images_total == 24


def test_identities_of_a_training_set_are_left_out(tmp_path):
    from cdface.data.recordio_writer import write_insightface_rec

    files = _folder(tmp_path / "faces", {f"id{i}": 3 for i in range(8)})
    (tmp_path / "train" / "id0").mkdir(parents=True)  # a training folder holding id0
    (tmp_path / "names.txt").write_text("\ufeffid1\nsomeone else\n", encoding="utf-8")
    write_insightface_rec(tmp_path / "rec", [0, 1], [files["id2"][1].read_bytes(), b"\xff\xd8\xffnot ours"])
    summary = make_pair_set(tmp_path / "faces", tmp_path / "p.bin", num_pairs=20, folds=1, seed=0,
                            exclude=[tmp_path / "train", tmp_path / "names.txt", tmp_path / "rec" / "train.rec"])
    assert summary.excluded == ["id0", "id1", "id2"]
    used = {line.split("\t")[2].split("/")[0] for line in summary.listing.read_text().splitlines()[1:]}
    assert used.isdisjoint({"id0", "id1", "id2"})


def test_cli_lowers_the_pair_count_to_what_the_folder_allows_and_says_so(tmp_path):
    _folder(tmp_path / "faces", {"a": 2, "b": 2, "c": 3})
    cmd = ["data", "make-pairs", tmp_path / "faces", "--out", tmp_path / "p.bin", "--folds", "2"]
    done = run_cdface(*cmd)
    assert done.returncode == 0, done.stderr
    assert "8 pairs (asked for 6000" in done.stdout and "2 folds of 4 (2 same, then 2 different)" in done.stdout
    assert len(load_bin(tmp_path / "p.bin").issame) == 8
    bad = run_cdface(*cmd[:-2], "--pairs", "7")
    assert bad.returncode == 2 and "multiple of 2 x folds = 20" in bad.stderr and "Traceback" not in bad.stderr
