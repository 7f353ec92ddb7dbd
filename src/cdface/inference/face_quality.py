"""Face quality in inference outputs: the un-normalised embedding norm, and the `--min-quality` rule.

The quality is the L2 norm of the model's embedding of the image as given (the un-mirrored pass, before
any normalisation), in the model's own embedding units. Models trained with a norm-aware margin (MagFace,
AdaFace) make it a face-quality estimate: MagFace (Meng et al., CVPR 2021) trains the norm to grow with
recognisability, and AdaFace (Kim et al., CVPR 2022) uses it as the image-quality proxy of its margin; ERC
curves (`cdface eval --quality norm`) measure how well it ranks a model's faces. For a model trained with a
plain ArcFace/CosFace head it is reported but means little, and a model whose graph ends with an
L2-normalisation gives norms of 1 for every face (no quality at all): `norm_note` says so.

The detector score of a face found in a photo is the detector's confidence, in [0, 1]; it is filtered by
the photo pipeline's `--min-score`, not here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["embedding_norms", "norm_note", "below_quality"]


def embedding_norms(plain: np.ndarray) -> np.ndarray:
    """(N,) float32 L2 norms of the un-mirrored, un-normalised embeddings (N, D) (NaN rows stay NaN)."""
    x = np.asarray(plain, dtype=np.float64)
    return np.sqrt(np.einsum("ij,ij->i", x, x)).astype(np.float32)


def norm_note(norms: np.ndarray) -> str | None:
    """A warning when the norms carry no quality: every norm 1 (the model normalises its output)."""
    finite = norms[np.isfinite(norms)]
    if finite.size and np.allclose(finite, 1.0, atol=1e-3):
        return ("the model's embeddings are unit vectors (its graph normalises them): their norm carries no face "
                "quality, so --min-quality cannot tell faces apart")
    return None


def below_quality(norms: np.ndarray, min_quality: float | None) -> np.ndarray:
    """(N,) bool: rows whose norm is below `min_quality` (NaN norms count as below); all False without one."""
    if min_quality is None:
        return np.zeros(norms.shape, dtype=bool)
    return ~(norms >= float(min_quality))
