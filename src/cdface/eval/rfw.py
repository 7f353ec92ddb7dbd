"""RFW (Racial Faces in-the-Wild): per-race pair verification, their mean, standard deviation and skewed error ratio.

Layout of the test set (Wang et al., ICCV 2019), under ``<data-root>`` (or ``<data-root>/RFW``)::

    test/txts/<Race>/<Race>_pairs.txt   LFW pair format, tab-separated: 'name i j' (genuine) or
                                        'name1 i name2 j' (impostor), 6,000 pairs in 10 folds of 300 + 300
    test/txts/<Race>/<Race>_lmk.txt     optional: '<path ending in name/name_%04d.jpg> <n> x1 y1 ... x5 y5' per
                                        image (the last 10 fields are the 5 points, in pixels)
    test/data/<Race>/<name>/<name>_%04d.jpg

for Race in African, Asian, Caucasian, Indian. Each race is scored with insightface's 10-fold protocol
(`cdface.eval.verification.evaluate_pairs`, the LFW-family accuracy). Across races, as the fairness papers
report them: the mean accuracy, the standard deviation of the four accuracies (population, ``np.std``), and the
skewed error ratio SER = max error / min error with error = 1 - accuracy (infinite, JSON null, when a race has
no error).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdface.errors import FormatError
from cdface.eval._arrays import plain_float
from cdface.eval.verification import PairResult, evaluate_pairs
from cdface.files import TEXT_ENCODING

__all__ = ["RACES", "RfwResult", "rfw_summary", "evaluate_rfw", "RfwRace", "find_rfw_test_dir",
           "read_rfw_race", "read_rfw_landmarks"]

RACES = ("African", "Asian", "Caucasian", "Indian")


@dataclass(frozen=True)
class RfwResult:
    """Per-race verification and the across-race fairness summary (accuracies in [0, 1])."""

    per_race: dict[str, PairResult]
    mean_accuracy: float
    std_accuracy: float  # population std of the per-race accuracies
    ser: float  # max error / min error (inf when the smallest error is 0)
    best_race: str
    worst_race: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_accuracy": plain_float(self.mean_accuracy),
            "std_accuracy": plain_float(self.std_accuracy),
            "ser": plain_float(self.ser),
            "best_race": self.best_race,
            "worst_race": self.worst_race,
            "accuracy": {race: plain_float(r.accuracy) for race, r in self.per_race.items()},
            "races": {race: r.to_dict() for race, r in self.per_race.items()},
        }


def rfw_summary(per_race: Mapping[str, PairResult]) -> RfwResult:
    """Mean, std and SER of per-race results (any number >= 1 of races; RFW has four)."""
    if not per_race:
        raise ValueError("no race results to summarise")
    races = list(per_race)
    acc = np.array([per_race[r].accuracy for r in races], dtype=np.float64)
    err = 1.0 - acc
    ser = float(err.max() / err.min()) if err.min() > 0 else (math.nan if err.max() == 0 else math.inf)
    return RfwResult(dict(per_race), float(acc.mean()), float(acc.std()), ser,
                     races[int(np.argmax(acc))], races[int(np.argmin(acc))])


def evaluate_rfw(embeddings: Mapping[str, Any], issame: Mapping[str, Any], nfolds: int = 10) -> RfwResult:
    """Per-race ``evaluate_pairs`` of flip-fused embeddings (2N, D) and genuine flags (N,), then the summary."""
    if set(embeddings) != set(issame):
        raise ValueError(f"embeddings for {sorted(embeddings)} but genuine flags for {sorted(issame)}")
    return rfw_summary({race: evaluate_pairs(embeddings[race], issame[race], nfolds=nfolds) for race in embeddings})


# --- layout --------------------------------------------------------------------------------------------------


@dataclass
class RfwRace:
    """One race's pairs, resolved to unique image files (no image decoded)."""

    race: str
    pairs_file: Path
    landmark_file: Path | None
    paths: list[Path]  # unique images, in first-use order
    pair_rows: np.ndarray  # (N, 2) indices into paths
    issame: np.ndarray  # (N,) bool
    landmarks: np.ndarray | None  # (len(paths), 5, 2), NaN rows for images without landmarks


def find_rfw_test_dir(data_root: Path) -> Path:
    """The ``test`` folder holding ``txts/`` and ``data/``; FormatError when there is none."""
    for candidate in (data_root / "test", data_root / "RFW" / "test", data_root / "rfw" / "test", data_root):
        if (candidate / "txts").is_dir():
            return candidate
    raise FormatError(data_root / "test" / "txts", None, "RFW's test layout: test/txts/<Race>/<Race>_pairs.txt")


def read_rfw_landmarks(path: Path) -> dict[str, np.ndarray]:
    """{image file name: (5, 2)} from ``<Race>_lmk.txt``: the first field is the image path, the last ten the
    points; FormatError naming the line for anything else."""
    table: dict[str, np.ndarray] = {}
    try:
        text = path.read_text(encoding=TEXT_ENCODING)
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(path, None, f"a readable UTF-8 landmark file ({exc})") from exc
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 11:
            raise FormatError(path, f"line {number}", f"'<image> [n] x1 y1 ... x5 y5', got {len(parts)} fields")
        try:
            values = np.array([float(v) for v in parts[-10:]], dtype=np.float64)
        except ValueError:
            raise FormatError(path, f"line {number}", "10 numeric landmark coordinates") from None
        if not np.isfinite(values).all():
            raise FormatError(path, f"line {number}", "finite landmark coordinates")
        table[parts[0].replace("\\", "/").rsplit("/", 1)[-1]] = values.reshape(5, 2)
    return table


def read_rfw_race(test_dir: Path, race: str) -> RfwRace:
    """Read ``<Race>_pairs.txt`` (and ``<Race>_lmk.txt`` when present) and check every image exists."""
    from cdface.data.lfw_pairs import lfw_image_path, read_lfw_pairs

    txts = test_dir / "txts" / race
    pairs_file = txts / f"{race}_pairs.txt"
    if not pairs_file.is_file():
        raise FormatError(pairs_file, None, f"RFW's {race} pair list (file not found)")
    pairs = read_lfw_pairs(pairs_file)
    if not pairs:
        raise FormatError(pairs_file, None, "at least one pair")
    image_dir = test_dir / "data" / race
    index: dict[Path, int] = {}
    rows = np.empty((len(pairs), 2), dtype=np.int64)
    for number, (n1, i1, n2, i2) in enumerate(pairs):
        for side, (name, idx) in enumerate(((n1, i1), (n2, i2))):
            path = lfw_image_path(image_dir, name, idx)
            if path not in index:
                if not path.is_file():
                    raise FormatError(pairs_file, f"pair {number + 1}", f"an existing image {path}")
                index[path] = len(index)
            rows[number, side] = index[path]
    paths = list(index)
    lmk_file = txts / f"{race}_lmk.txt"
    landmarks = None
    if lmk_file.is_file():
        table = read_rfw_landmarks(lmk_file)
        landmarks = np.full((len(paths), 5, 2), np.nan)
        for k, path in enumerate(paths):
            if path.name in table:
                landmarks[k] = table[path.name]
    return RfwRace(race, pairs_file, lmk_file if landmarks is not None else None, paths, rows,
                   np.array([p[0] == p[2] for p in pairs], dtype=bool), landmarks)
