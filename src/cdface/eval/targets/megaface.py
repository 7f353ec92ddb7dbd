"""MegaFace challenge 1 end to end: FaceScrub probes against MegaFace distractors, from a directory.

Layout: `cdface.eval.megaface_layout` (insightface's `data/` folder of its MegaFace tools, plus optional
landmarks).

Features are insightface's `gen_megaface.py` ones (image + mirror summed, L2-normalised). Noise handling
follows its `remove_noises.py`: a noisy FaceScrub image takes its identity's centre (the normalised sum of
the clean features; the reference adds +-0.001 uniform noise, omitted here for determinism); noisy
distractors are masked: never scored, yet counted as impostors of every probe, as the reference's padding
(a huge extra coordinate) leaves them in the FAR denominator while they can never rank or be accepted.
Scoring is `cdface.eval.megaface.megaface_evaluate` (devkit protocol by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cdface.embedding import l2_normalize
from cdface.eval.megaface_layout import read_megaface_layout
from cdface.eval.results import TargetResult
from cdface.files import sha256_file
from cdface.inference.embedder import FaceEmbedder
from cdface.inference.extract import ImageFiles, extract_features

__all__ = ["evaluate_megaface_target"]

DEFAULT_SIZES = (10, 100, 1_000, 10_000, 100_000)


def _clean_probes(features: np.ndarray, identities: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Replace each noisy probe by its identity's centre of clean features (remove_noises.py)."""
    out = features.copy()
    for identity in np.unique(identities[noisy]):
        members = identities == identity
        clean = members & ~noisy
        if not clean.any():
            continue  # nothing to take a centre from: keep the features as they are
        out[members & noisy] = l2_normalize(features[clean].sum(axis=0, keepdims=True))
    return out


def evaluate_megaface_target(
    embedder: FaceEmbedder,
    root: Path,
    sizes: Sequence[int] = (),
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    protocol: str = "devkit",
    remove_noise: bool = True,
    seed: int = 0,
    far_levels: Sequence[float] | None = None,
    strict: bool = False,
) -> TargetResult:
    """Embed FaceScrub probes and MegaFace distractors; identification (CMC, size curve) and verification.

    `far_levels`: the verification TAR table's FARs (default 1e-4 ... 1e-9). `strict`: images that are not
    at the model's input size (and have no landmarks) raise InputSizeError instead of a warning.
    """
    from cdface.eval.megaface import DEFAULT_MEGAFACE_FARS, megaface_evaluate
    from cdface.eval.verification import count_nonfinite_rows
    from cdface.inference.input_check import check_input_sizes

    layout = read_megaface_layout(root)
    size = tuple(embedder.input_cfg["input_size"])
    probe_feats = extract_features(
        embedder,
        ImageFiles(layout.probe_paths, layout.probe_landmarks, size),
        batch_size,
        num_workers,
        progress,
        desc="facescrub",
    )
    dist_feats = extract_features(
        embedder,
        ImageFiles(layout.distractor_paths, layout.distractor_landmarks, size),
        batch_size,
        num_workers,
        progress,
        desc="megaface",
    )
    sizes_seen = probe_feats.size_counts + dist_feats.size_counts
    size_summary = check_input_sizes(sizes_seen, size, str(root), strict=strict)
    nonfinite = count_nonfinite_rows(probe_feats.fused(), dist_feats.fused())
    probes = l2_normalize(probe_feats.fused())
    distractors = l2_normalize(dist_feats.fused())
    if remove_noise:
        probes = _clean_probes(probes, layout.probe_identities, layout.probe_noisy)
        distractors = distractors[~layout.distractor_noisy]
    labels = np.unique(layout.probe_identities, return_inverse=True)[1]
    subset_sizes = tuple(sizes) or tuple(s for s in DEFAULT_SIZES if s < len(distractors))
    masked = int(layout.distractor_noisy.sum()) if remove_noise else 0
    ident, verif = megaface_evaluate(
        probes, labels, distractors, distractor_sizes=subset_sizes, seed=seed, protocol=protocol,
        masked_distractors=masked, far_levels=tuple(far_levels or DEFAULT_MEGAFACE_FARS),
    )
    assert ident is not None and verif is not None
    metrics = ident.to_dict() | verif.to_dict() | {"valid": nonfinite == 0, "nonfinite_embeddings": nonfinite}
    curves = {
        "cmc": {"rank": list(ident.cmc), "rate": list(ident.cmc.values())},
        "distractors": {"size": list(ident.size_curve), "rank1": list(ident.size_curve.values())},
    }
    seconds = probe_feats.seconds + dist_feats.seconds
    n_images = len(layout.probe_paths) + len(layout.distractor_paths)
    provenance = {
        "files": {f.name: sha256_file(f) for f in layout.files},
        "protocol": {
            "name": f"MegaFace challenge 1 ({protocol})",
            "flip": embedder.flip,
            "aligned_with_landmarks": layout.probe_landmarks is not None,
            "remove_noise": remove_noise,
            "noisy_probes_replaced": int(layout.probe_noisy.sum()) if remove_noise else 0,
            "noisy_distractors_masked": int(layout.distractor_noisy.sum()) if remove_noise else 0,
            "distractor_subset_sizes": list(subset_sizes),
            "subset_seed": seed,
        },
        "num_probes": len(layout.probe_paths),
        "num_distractors": int(len(distractors)),
        "num_images": n_images,
        "input_sizes": size_summary,
        "seconds": round(seconds, 3),
        "images_per_second": round(n_images / seconds, 1) if seconds > 0 else None,
    }
    return TargetResult("megaface", "megaface", metrics, provenance, curves)
