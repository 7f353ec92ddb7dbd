"""TinyFace end to end (low-resolution identification), as AdaFace's ``validate_tinyface.py`` evaluates it.

Layout and labels: `cdface.eval.tinyface`. Each image and its mirror are embedded and summed (AdaFace's
default ``pre_norm_vector_add`` fusion: the sum of the un-normalised embeddings, then L2-normalised, which is
cdface's flip fusion), then probes are searched in Gallery_Match + Gallery_Distractor and rank-1/5/20 are
reported (`cdface.eval.identification`).

Resolution: AdaFace evaluates its aligned release (``aligned_pad_0.1_pad_high``: MTCNN-aligned, already at
112x112), which is read as is. Without it the original crops (about 20x16 pixels) are resized to the model's
input size bilinearly (`cdface.data.align.fit_to_size`, the ``cv2.resize`` default AdaFace's loose-crop step
uses), without alignment: such numbers are not comparable with AdaFace's table, and the provenance says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cdface.embedding import l2_normalize
from cdface.eval.identification import DEFAULT_RANKS, identification
from cdface.eval.results import TargetResult
from cdface.eval.tinyface import read_tinyface_layout
from cdface.files import sha256_file
from cdface.inference.embedder import FaceEmbedder
from cdface.inference.extract import ImageFiles, extract_features

__all__ = ["evaluate_tinyface_target"]


def evaluate_tinyface_target(
    embedder: FaceEmbedder,
    data_root: Path,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    ranks: Sequence[int] = DEFAULT_RANKS,
) -> TargetResult:
    """Embed TinyFace's probes and gallery (match + distractors) and score closed-set identification."""
    layout = read_tinyface_layout(data_root)
    size = tuple(embedder.input_cfg["input_size"])
    paths = layout.probe_paths + layout.gallery_paths
    feats = extract_features(embedder, ImageFiles(paths, None, size), batch_size, num_workers, progress,
                             desc="tinyface")
    features = l2_normalize(feats.fused()).astype(np.float32)
    n_p = len(layout.probe_paths)
    device = embedder.model.device
    probe, gallery = features[:n_p], features[n_p:]
    if device.type == "cuda":  # score on the GPU (torch matmul); the CPU path is numpy's BLAS
        probe, gallery = torch.from_numpy(probe).to(device), torch.from_numpy(gallery).to(device)
    res = identification(probe, layout.probe_labels, gallery, layout.gallery_labels, ranks=ranks)
    metrics = res.to_dict()
    curves = {"cmc": {"rank": list(range(1, res.cmc_curve.size + 1)), "rate": res.cmc_curve.tolist()}}
    provenance = {
        "files": {str(f): sha256_file(f) for f in layout.files},
        "protocol": {
            "name": "TinyFace closed-set identification (AdaFace's DIR_FAR)",
            "ranks": list(ranks),
            "flip": embedder.flip,
            "images": str(layout.image_root),
            "aligned_release": layout.aligned,
            "resized_from_original_crops": not layout.aligned,
            "mat_id_mismatches": layout.mat_id_mismatches,
        },
        "num_images": len(paths),
        "seconds": round(feats.seconds, 3),
        "images_per_second": round(feats.images_per_second, 1),
    }
    return TargetResult("tinyface", "identification", metrics, provenance, curves)
