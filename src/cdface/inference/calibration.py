"""Calibrate a decision threshold for `cdface compare` / `search`: the cosine at a chosen FAR, from a pair set
embedded with the model being used, or from an earlier `cdface eval` results.json.

The pair set is embedded exactly as `cdface eval` embeds it (flip-fused, L2-normalised; cosine = 1 - d²/2
of insightface's squared distance), so a threshold calibrated here equals the one `cdface eval --out` stores
for the same model and set. The rule is `cdface.eval.far_threshold`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cdface.errors import ConfigError
from cdface.eval.thresholds import CosineThreshold

__all__ = ["pair_set_cosines", "calibrate_on_pairs", "threshold_at_far_from"]


def pair_set_cosines(embedder: Any, path: Any, batch_size: int = 64, num_workers: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(cosine (P,) float64, issame (P,) bool) of a `.bin` pair set (a path or a loaded `PairSet`) embedded with
    `embedder` (a FaceEmbedder).

    ConfigError when the model gives non-finite embeddings; FormatError for an unreadable set.
    """
    from cdface.data.pairs_bin import load_bin
    from cdface.eval.verification import count_nonfinite_rows, pair_distances
    from cdface.inference.extract import EncodedImages, extract_features
    from cdface.inference.input_check import check_input_sizes

    pair_set = load_bin(path) if isinstance(path, (str, Path)) else path
    path = getattr(pair_set, "path", path)
    size = tuple(embedder.input_cfg["input_size"])
    feats = extract_features(embedder, EncodedImages(pair_set.images, str(path), size), batch_size, num_workers,
                             False, "calibrate")
    check_input_sizes(feats.size_counts, size, str(path),
                      hint="the pair set's images are used as they are (a .bin holds aligned crops)")
    fused = feats.fused()
    if count_nonfinite_rows(fused):
        raise ConfigError(f"{path}: the model gave non-finite (NaN/inf) embeddings; no threshold can be calibrated")
    return 1.0 - pair_distances(fused) / 2.0, np.asarray(pair_set.issame, dtype=bool)


def calibrate_on_pairs(embedder: Any, path: str | Path, far: float, batch_size: int = 64,
                       num_workers: int = 0) -> CosineThreshold:
    """The cosine threshold at `far` on the pair set `path` embedded with `embedder` (see the module doc)."""
    from cdface.data.pairs_bin import load_bin
    from cdface.eval.far_threshold import check_far_measurable, threshold_at_far

    pair_set = load_bin(path)
    impostors = int((~np.asarray(pair_set.issame, dtype=bool)).sum())
    if impostors:  # refuse before embedding the set (minutes on a CPU)
        check_far_measurable(far, impostors, str(path))
    cosine, issame = pair_set_cosines(embedder, pair_set, batch_size, num_workers)
    found = threshold_at_far(issame, cosine, far, set_name=str(path))
    return CosineThreshold(found.cosine, None, found.describe(), inclusive=True, far=float(far))


def threshold_at_far_from(far: float, results: str | None, pairs: str | None, target: str | None,
                          model: str | None, embedder: Any = None, batch_size: int = 64) -> CosineThreshold:
    """`--far F` with `--threshold-from RESULTS_JSON` or `--calibrate PAIRS_BIN` (embedded with `embedder`)."""
    from cdface.eval.thresholds import far_threshold_from_results

    if results:
        return far_threshold_from_results(results, far, target, model)
    if pairs and embedder is not None:
        return calibrate_on_pairs(embedder, pairs, far, batch_size)
    raise ConfigError("--far needs where to calibrate it: --threshold-from RESULTS_JSON (a `cdface eval --out` "
                      "run) or --calibrate PAIRS_BIN (a pair set embedded with --model)")
