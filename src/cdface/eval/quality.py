"""`cdface eval --quality norm|norm-fused|faceness|FILE`: per-image quality for error-versus-reject (ERC).

- ``norm``: MagFace's protocol (``inference/gen_feat.py`` embeds the image and its mirror but keeps only the
  image's feature; ``eval/eval_quality/eval_quality.py`` reads the quality and the pair distances from those
  lines): the L2 norm of each plain image's un-normalised embedding is the quality, and the pairs are compared
  on the plain embeddings too, so the ERC-AUC compares with published curves;
- ``norm-fused``: the same on the flip-fused embeddings (image + mirror, cdface's verification features), labelled
  as such; with flip off it equals ``norm``;
- ``faceness``: the detector score of each image (IJB's 5pts file, last column); pair sets have none;
- a ``.npy`` path: one finite quality per image, in the target's image order (pair sets: rows 2i, 2i+1 of
  pair i, as the .bin stores them; IJB: the lines of ``*_name_5pts_score.txt``).

With ``faceness`` or a file, pairs are compared on the target's verification features (flip-fused unless flip
is off). Pair sets score pairs of images; IJB 1:1 scores template pairs, where a template's quality is the mean of its
images' qualities (cdface's choice: MagFace defines ERC on image pairs only) and a pair's quality is the lower
of its two templates', as for images. Scoring: `cdface.eval.erc.error_versus_reject` (MagFace's distances and
FMR index; threshold fixed on all pairs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cdface.errors import ConfigError, FormatError
from cdface.eval.erc import ErcResult, error_versus_reject, ijb_error_versus_reject

__all__ = ["image_quality", "pair_set_erc", "ijb_erc", "erc_outputs", "erc_features", "QUALITY_CHOICES"]

QUALITY_CHOICES = ("norm", "norm-fused", "faceness")
NORM_SOURCES = {"norm": "feature norm, plain image (MagFace)", "norm-fused": "feature norm, flip-fused"}


def erc_features(spec: str, plain: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """The (N, D) features an ERC of quality ``spec`` compares pairs on and measures: the plain images' for
    ``norm`` (MagFace's protocol), else the target's verification features ``fused`` (image + mirror, fused as the
    target's reference fuses them; the plain ones when flip is off)."""
    return plain if spec == "norm" else fused


def image_quality(spec: str, features: np.ndarray, faceness: np.ndarray | None, target: str) -> tuple[np.ndarray, str]:
    """(N,) float64 qualities and a description of their source; ConfigError/FormatError on bad input."""
    n = features.shape[0]
    if spec in NORM_SOURCES:  # `features` are those erc_features chose for the spec
        return np.linalg.norm(np.asarray(features, np.float64), axis=1), NORM_SOURCES[spec]
    if spec == "faceness":
        if faceness is None:
            raise ConfigError(f"--quality faceness: target {target!r} has no detector scores (use norm or a .npy)")
        return np.asarray(faceness, np.float64).reshape(-1), "detector faceness"
    path = Path(spec)
    if path.suffix != ".npy" or not path.is_file():
        raise ConfigError(f"--quality must be norm, norm-fused, faceness or an existing .npy file, got {spec!r}")
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FormatError(path, None, f"a .npy array without pickled objects ({exc})") from exc
    values = values.reshape(-1)
    if values.shape[0] != n or values.dtype.kind not in "iuf" or not np.all(np.isfinite(values)):
        raise FormatError(path, None, f"{n} finite qualities, one per image of {target!r} in its order, got "
                          f"{values.dtype} {values.shape}")
    return values.astype(np.float64), str(path)


def pair_set_erc(plain: np.ndarray, fused: np.ndarray, issame: Any, spec: str, target: str) -> tuple[ErcResult, str]:
    """ERC of a pair set from the embeddings (2N, D) of its plain images and its flip-fused ones, rows 2i and 2i+1
    forming pair i; the features compared and measured are ``erc_features(spec, plain, fused)``."""
    features = erc_features(spec, plain, fused)
    quality, source = image_quality(spec, features, None, target)
    pairs = np.arange(features.shape[0]).reshape(-1, 2)
    return error_versus_reject(features, pairs, issame, quality), source


def ijb_erc(features: np.ndarray, faceness: np.ndarray, templates: np.ndarray, medias: np.ndarray,
            pairs: np.ndarray, labels: np.ndarray, spec: str, target: str, use_norm_score: bool = True,
            use_detector_score: bool = True) -> tuple[ErcResult, str]:
    """ERC of IJB 1:1 (`cdface.eval.erc.ijb_error_versus_reject`) with the quality ``spec`` resolved; ``features``
    are those of ``erc_features(spec, ...)`` (the caller holds the plain and mirrored passes)."""
    quality, source = image_quality(spec, features, faceness, target)
    return ijb_error_versus_reject(features, faceness, templates, medias, pairs, labels, quality,
                                   use_norm_score=use_norm_score, use_detector_score=use_detector_score), source


def erc_outputs(res: ErcResult, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the metrics entry, the plot curve) of an ERC result."""
    metrics = res.to_dict(curves=True) | {"quality": source}
    level = next(iter(res.fnmr))
    curve = {"reject": res.reject.tolist(), "fnmr": res.fnmr[level].tolist()}  # plots only (NaN allowed)
    return metrics, curve
