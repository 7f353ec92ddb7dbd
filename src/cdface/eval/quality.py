"""`cdface eval --quality norm|faceness|FILE`: per-image quality for error-versus-reject (ERC) on a target.

- ``norm``: the L2 norm of each image's (flip-fused, un-normalised) embedding, the quality MagFace and AdaFace
  read from magnitude-aware models;
- ``faceness``: the detector score of each image (IJB's 5pts file, last column); pair sets have none;
- a ``.npy`` path: one finite quality per image, in the target's image order (pair sets: rows 2i, 2i+1 of
  pair i, as the .bin stores them; IJB: the lines of ``*_name_5pts_score.txt``).

Pair sets score pairs of images; IJB 1:1 scores template pairs, where a template's quality is the mean of its
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

__all__ = ["image_quality", "pair_set_erc", "ijb_erc", "erc_outputs", "QUALITY_CHOICES"]

QUALITY_CHOICES = ("norm", "faceness")


def image_quality(spec: str, features: np.ndarray, faceness: np.ndarray | None, target: str) -> tuple[np.ndarray, str]:
    """(N,) float64 qualities and a description of their source; ConfigError/FormatError on bad input."""
    n = features.shape[0]
    if spec == "norm":
        return np.linalg.norm(np.asarray(features, np.float64), axis=1), "feature norm"
    if spec == "faceness":
        if faceness is None:
            raise ConfigError(f"--quality faceness: target {target!r} has no detector scores (use norm or a .npy)")
        return np.asarray(faceness, np.float64).reshape(-1), "detector faceness"
    path = Path(spec)
    if path.suffix != ".npy" or not path.is_file():
        raise ConfigError(f"--quality must be norm, faceness or an existing .npy file, got {spec!r}")
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FormatError(path, None, f"a .npy array without pickled objects ({exc})") from exc
    values = values.reshape(-1)
    if values.shape[0] != n or values.dtype.kind not in "iuf" or not np.all(np.isfinite(values)):
        raise FormatError(path, None, f"{n} finite qualities, one per image of {target!r} in its order, got "
                          f"{values.dtype} {values.shape}")
    return values.astype(np.float64), str(path)


def pair_set_erc(fused: np.ndarray, issame: Any, spec: str, target: str) -> tuple[ErcResult, str]:
    """ERC of a pair set from its flip-fused embeddings (2N, D), rows 2i and 2i+1 forming pair i."""
    quality, source = image_quality(spec, fused, None, target)
    pairs = np.arange(fused.shape[0]).reshape(-1, 2)
    return error_versus_reject(fused, pairs, issame, quality), source


def ijb_erc(features: np.ndarray, faceness: np.ndarray, templates: np.ndarray, medias: np.ndarray,
            pairs: np.ndarray, labels: np.ndarray, spec: str, target: str, use_norm_score: bool = True,
            use_detector_score: bool = True) -> tuple[ErcResult, str]:
    """ERC of IJB 1:1 (`cdface.eval.erc.ijb_error_versus_reject`) with the quality ``spec`` resolved."""
    quality, source = image_quality(spec, features, faceness, target)
    return ijb_error_versus_reject(features, faceness, templates, medias, pairs, labels, quality,
                                   use_norm_score=use_norm_score, use_detector_score=use_detector_score), source


def erc_outputs(res: ErcResult, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the metrics entry, the plot curve) of an ERC result."""
    metrics = res.to_dict(curves=True) | {"quality": source}
    level = next(iter(res.fnmr))
    curve = {"reject": res.reject.tolist(), "fnmr": res.fnmr[level].tolist()}  # plots only (NaN allowed)
    return metrics, curve
