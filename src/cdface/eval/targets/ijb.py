"""IJB-B / IJB-C end to end, as insightface's `ijb_11.py` / `ijb_1n.py` prepare features.

Layout (IJB_release): `<root>/meta/<ds>_face_tid_mid.txt`, `<ds>_name_5pts_score.txt`,
`<ds>_template_pair_label.txt` (1:1) and the 1:N gallery/probe CSVs, plus `<root>/loose_crop/<image>`.
Each loose crop is aligned with its 5 landmarks to the IJB scripts' 112x112 ArcFace template (`align_face(...,
template="ijb")`: their float32 copy, one ulp off norm_crop's on one coordinate), embedded with its mirror,
and the two embeddings are summed (float32); template pooling, faceness weighting (the 5pts file's last
column) and scoring are `cdface.eval.ijb`'s, which follow the reference (TestMode N1 D1 F1 by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cdface.errors import FormatError
from cdface.eval.results import TargetResult
from cdface.files import sha256_file
from cdface.inference.embedder import FaceEmbedder
from cdface.inference.extract import ImageFiles, extract_features

__all__ = ["evaluate_ijb_target", "log_spaced_curve"]


def log_spaced_curve(fpr: np.ndarray, tpr: np.ndarray, points: int = 400) -> dict[str, list[float]]:
    """A ROC thinned to about `points` points spaced evenly in log-FAR (for plots; millions of pairs)."""
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    positive = fpr[fpr > 0]
    if positive.size == 0 or fpr.size <= points:
        return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    grid = np.logspace(np.log10(positive.min()), 0.0, points)
    idx = np.unique(np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, fpr.size - 1))
    return {"fpr": fpr[idx].tolist(), "tpr": tpr[idx].tolist()}


def evaluate_ijb_target(
    embedder: FaceEmbedder,
    root: Path,
    dataset: str,
    protocols: Sequence[str] = ("11", "1n"),
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    use_norm_score: bool = True,
    use_detector_score: bool = True,
    identification_protocol: str = "insightface",
    far_levels: Sequence[float] | None = None,
    quality: str | None = None,
) -> TargetResult:
    """Embed every loose crop of an IJB release directory and run the 1:1 and/or 1:N protocols.

    `far_levels`: the 1:1 TAR table's FARs (default insightface's 1e-6 ... 1e-1). `quality`: also the
    error-versus-reject curve on the template pairs (`cdface.eval.quality`). The metrics carry
    `valid` and `nonfinite_embeddings` (images whose fused feature has NaN/inf).
    """
    from cdface.eval.ijb import ijb_identification, ijb_verification
    from cdface.eval.ijb_meta import ijb_file_names, load_ijb_1n_meta, load_ijb_meta
    from cdface.eval.verification import count_nonfinite_rows

    protocols = tuple(p.lower() for p in protocols)
    unknown = set(protocols) - {"11", "1n"}
    if unknown or not protocols:
        raise ValueError(f"IJB protocols must be '11' and/or '1n', got {sorted(unknown) or 'none'}")
    meta_dir, image_dir = root / "meta", root / "loose_crop"
    for needed in (meta_dir, image_dir):
        if not needed.is_dir():
            raise FormatError(needed, None, f"the {dataset} IJB_release layout: {root}/meta and {root}/loose_crop")
    meta = load_ijb_meta(meta_dir, dataset=dataset, with_pairs="11" in protocols)
    paths = [image_dir / str(name) for name in meta.names]
    size = tuple(embedder.input_cfg["input_size"])
    dataset_images = ImageFiles(paths, meta.landmarks, size, skip_errors=False, template="ijb")
    feats = extract_features(embedder, dataset_images, batch_size, num_workers, progress, desc=dataset)
    features = feats.plain if feats.flipped is None else feats.plain + feats.flipped  # float32, as the reference

    common: dict[str, Any] = {"use_norm_score": use_norm_score, "use_detector_score": use_detector_score}
    nonfinite = count_nonfinite_rows(features)
    metrics: dict[str, Any] = {"valid": nonfinite == 0, "nonfinite_embeddings": nonfinite}
    curves: dict[str, Any] = {}
    # with non-finite features template scores are NaN and the ROC undefined: the result is only "invalid"
    scored = () if nonfinite else protocols
    if "11" in scored:
        levels = {} if far_levels is None else {"far_levels": tuple(far_levels)}
        ver = ijb_verification(
            features, meta.faceness, meta.templates, meta.medias, meta.pairs, meta.labels, **common, **levels
        )
        metrics["verification"] = ver.to_dict()
        curves["roc"] = log_spaced_curve(ver.fpr, ver.tpr)
        if quality is not None:  # error-versus-reject on the template pairs (cdface.eval.quality)
            from cdface.eval.quality import erc_features, erc_outputs, ijb_erc

            metrics["erc"], curves["erc"] = erc_outputs(*ijb_erc(
                erc_features(quality, feats.plain, features), meta.faceness, meta.templates, meta.medias,
                meta.pairs, meta.labels, quality,
                dataset.lower(), **common))
    if "1n" in scored:
        lists = load_ijb_1n_meta(meta_dir, dataset=dataset, known_templates=meta.templates)
        ident = ijb_identification(
            features,
            meta.faceness,
            meta.templates,
            meta.medias,
            lists.galleries,
            lists.probes,
            protocol=identification_protocol,
            **common,
        )
        metrics["identification"] = ident.to_dict()

    names = ijb_file_names(dataset)
    keys = (
        ["tid_mid", "5pts"]
        + (["pairs"] if "11" in protocols else [])
        + (["gallery1", "gallery2", "probe"] if "1n" in protocols else [])
    )
    provenance = {
        "files": {names[k]: sha256_file(meta_dir / names[k]) for k in keys},
        "protocol": {
            "name": f"{dataset} insightface ijb_11/ijb_1n",
            "protocols": list(protocols),
            "alignment": "5-point similarity to the IJB scripts' ArcFace 112x112 template (OpenCV warp)",
            "flip": embedder.flip,
            "use_norm_score": use_norm_score,
            "use_detector_score": use_detector_score,
            "identification_protocol": identification_protocol,
        },
        "num_images": len(paths),
        "seconds": round(feats.seconds, 3),
        "images_per_second": round(feats.images_per_second, 1),
    }
    return TargetResult(dataset.lower(), "ijb", metrics, provenance, curves)
