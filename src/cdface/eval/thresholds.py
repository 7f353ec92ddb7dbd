"""A same/different cut-off on cosine similarity, given directly or taken from an evaluation's results.json.

insightface's pair protocol picks, per fold, the best threshold t on the squared Euclidean distance of
L2-normalised (flip-fused) embeddings, predicting "same" when d² < t; results.json stores the mean over the
folds as `threshold`. For unit vectors d² = |a|² + |b|² - 2 a·b = 2 - 2 cos, so d² < t  <=>  cos > 1 - t/2.

results.json also stores, per pair set, the cosine threshold at the standard FARs (`far_thresholds`, see
`cdface.eval.far_threshold`: the lowest ROC threshold with FAR <= the level, "same" when cos >= it);
`far_threshold_from_results` reads one back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdface.errors import ConfigError, FormatError
from cdface.files import sha256_file

__all__ = ["CosineThreshold", "distance_to_cosine", "threshold_from_results", "far_threshold_from_results"]


@dataclass(frozen=True)
class CosineThreshold:
    """`cosine`: "same" when cos > cosine (cos >= cosine when `inclusive`, as for a threshold at a FAR).
    `distance`: the squared-distance threshold it came from (or None); `source`: a sentence saying where it
    came from (printed and written with each decision); `far`: the FAR it was calibrated at (or None)."""

    cosine: float
    distance: float | None
    source: str
    inclusive: bool = False
    far: float | None = None

    def same(self, cosine: Any) -> Any:
        """The decision for a cosine (a float or an array): above the cut-off (or on it when inclusive)."""
        return cosine >= self.cosine if self.inclusive else cosine > self.cosine

    @property
    def operator(self) -> str:
        return ">=" if self.inclusive else ">"


def distance_to_cosine(squared_distance: float) -> float:
    """insightface's squared-distance threshold on unit vectors -> the cosine cut-off: 1 - d²/2."""
    return 1.0 - float(squared_distance) / 2.0


def _load_entry(path: Path, model: str | None) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(path, None, f"a results.json written by `cdface eval --out` ({exc})") from None
    entries = document.get("models") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise FormatError(path, None, "a results.json written by `cdface eval --out` (no 'models' list)")
    return _pick_model(path, entries, model)


def _pick_target(path: Path, entry: dict[str, Any], target: str | None, key: str, what: str
                 ) -> tuple[str, dict[str, Any]]:
    """(target, metrics) of the pair set holding `key`, chosen by `target` (a key or its results.md label)."""
    results: dict[str, Any] = entry.get("results") or {}
    pair_targets = {t: m for t, m in results.items() if isinstance(m, dict) and m.get(key) is not None}
    if not pair_targets:
        raise FormatError(path, None, f"a pair-set result with {what} for model {entry.get('model')!r}")
    if target is None:
        if len(pair_targets) > 1:
            raise ConfigError(f"{path} holds several pair sets ({', '.join(pair_targets)}): pick one with --target")
        target = next(iter(pair_targets))
    if target not in pair_targets:  # the name results.md shows (`lfw` for /data/lfw.bin, `a/lfw` when two share it)
        from cdface.eval.report import distinct_labels

        by_label = {label: k for k, label in distinct_labels(list(pair_targets)).items()}
        target = by_label.get(target, target)
    if target not in pair_targets:
        raise ConfigError(f"{path}: no pair-set {what} for target {target!r}; there are {', '.join(pair_targets)}")
    metrics = pair_targets[target]
    if metrics.get("valid") is False:
        raise ConfigError(f"{path}: the result of {target!r} is marked invalid (non-finite embeddings)")
    return target, metrics


def threshold_from_results(path: str | Path, target: str | None = None, model: str | None = None) -> CosineThreshold:
    """The pair-set threshold of `target` for `model` in a `cdface eval --out` results.json.

    With one model (or one pair-set target) in the file, the choice is implicit; otherwise `model` (a path as
    given to `cdface eval`, or its file name) and `target` pick it. FormatError / ConfigError say what is there.
    """
    path = Path(path)
    entry = _load_entry(path, model)
    target, metrics = _pick_target(path, entry, target, "threshold", "threshold")
    distance = float(metrics["threshold"])
    cosine = distance_to_cosine(distance)
    source = (
        f"{path} ({target}, model {entry.get('model')}): insightface's best threshold is a squared distance of "
        f"L2-normalised embeddings, d² < {distance:.4f}; for unit vectors cos = 1 - d²/2, so cos > {cosine:.4f}"
    )
    return CosineThreshold(cosine, distance, source)


def far_threshold_from_results(path: str | Path, far: float, target: str | None = None, model: str | None = None
                               ) -> CosineThreshold:
    """The cosine threshold at FAR `far` that `cdface eval` stored for a pair set (`far_thresholds`).

    ConfigError when that FAR is not stored (the standard FARs 1e-6 ... 1e-1 and `eval --far`'s levels are) or
    is below 1 / impostor pairs of the set (then it holds null); the message lists the FARs available.
    """
    from cdface.eval._arrays import far_key
    from cdface.eval.far_threshold import FarThreshold

    path = Path(path)
    entry = _load_entry(path, model)
    target, metrics = _pick_target(path, entry, target, "far_thresholds", "FAR thresholds (results.json of "
                                   "an older cdface: run `cdface eval --out` again)")
    table = metrics["far_thresholds"]
    levels = table.get("levels") or {}
    impostors = int(table.get("impostor_pairs") or 0)
    available = ", ".join(k for k, v in levels.items() if v) or "none"
    row = levels.get(far_key(float(far)))
    if row is None:
        if far_key(float(far)) in levels or (impostors and far * impostors < 1.0 - 1e-9):
            raise ConfigError(f"{path} ({target}): FAR {far:g} needs at least {int(round(1 / far))} impostor pairs; "
                              f"the set has {impostors} (stored FARs: {available})")
        raise ConfigError(f"{path} ({target}): no threshold stored for FAR {far:g} (stored: {available}; "
                          f"`cdface eval --far {far:g}` stores it)")
    found = FarThreshold(float(far), float(row["cosine"]), float(row["far"]), float(row["tar"]), impostors,
                         int(table.get("genuine_pairs") or 0), f"{target} (model {entry.get('model')}, {path})")
    return CosineThreshold(found.cosine, None, found.describe(), inclusive=True, far=float(far))


def _pick_model(path: Path, entries: list[dict[str, Any]], model: str | None) -> dict[str, Any]:
    """The entry of `model`: the same path string, else the same file contents (sha256), else the only entry
    with its file name. Two runs' `backbone.pt` share a name: a name alone never picks among several."""
    if len(entries) == 1:
        return entries[0]
    names = [str(e.get("model")) for e in entries]
    if model is not None:
        exact = [e for e, name in zip(entries, names) if name == str(model)]
        if len(exact) == 1:
            return exact[0]
        if Path(model).is_file():
            digest = sha256_file(model)
            same_file = [e for e in entries if e.get("sha256") == digest]
            if len(same_file) == 1:
                return same_file[0]
        same_name = [e for e, name in zip(entries, names) if Path(name).name == Path(str(model)).name]
        if len(same_name) == 1:
            return same_name[0]
    raise ConfigError(f"{path} holds several models ({', '.join(names)}): the one given with --model must be one")
