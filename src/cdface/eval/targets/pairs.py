"""Pair-set verification targets (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW, or any `.bin`), end to end.

The protocol is insightface's: each image and its mirror are embedded, summed in float64, L2-normalised,
and scored by 10-fold accuracy over thresholds 0..4 step 0.01 on the squared distance
(`cdface.eval.verification.evaluate_pairs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from cdface.errors import FormatError
from cdface.eval.results import TargetResult
from cdface.eval.verification import embedding_norm_stats, evaluate_pairs, pair_distances
from cdface.files import sha256_file
from cdface.inference.embedder import FaceEmbedder
from cdface.inference.extract import EncodedImages, extract_features
from cdface.inference.input_check import check_input_sizes
from cdface.inference.loading import EmbeddingModel

__all__ = ["PAIR_TARGETS", "resolve_pair_target", "verify_pairs", "evaluate_pair_target"]

PAIR_TARGETS = ("lfw", "cfp_fp", "cfp_ff", "agedb_30", "calfw", "cplfw", "vgg2_fp")


def resolve_pair_target(target: str, data_root: str | Path | None) -> Path | None:
    """`<data_root>/<name>.bin` for a known name or any `<data_root>/<target>.bin`; a `.bin` path as given."""
    if target.lower().endswith(".bin"):
        return Path(target)
    if data_root is not None:
        candidate = Path(data_root) / f"{target}.bin"
        if candidate.is_file() or target.lower() in PAIR_TARGETS:
            return candidate
    return None


def _as_embedder(model: Any, batch_size: int, flip: bool, device: Any) -> FaceEmbedder:
    if isinstance(model, FaceEmbedder):
        return model
    if isinstance(model, (nn.Module, EmbeddingModel, str, Path)):
        return FaceEmbedder(model, device=device, batch_size=batch_size, flip=flip)
    raise TypeError(f"expected an nn.Module, EmbeddingModel, FaceEmbedder or path, got {type(model).__name__}")


def verify_pairs(
    model_or_embedder: nn.Module | EmbeddingModel | FaceEmbedder | str | Path,
    pairs: Any,
    batch_size: int = 64,
    nfolds: int = 10,
    flip: bool = True,
    device: Any = None,
    num_workers: int = 0,
    progress: bool = False,
) -> Any:
    """PairResult of a model on a pair set (a `.bin` path or a loaded `PairSet`); usable on a live module.

    A live training module is switched to eval mode for the pass and restored afterwards.
    """
    return _run_pairs(model_or_embedder, pairs, batch_size, nfolds, flip, device, num_workers, progress)[0]


def pair_score_curves(fused: Any, issame: Any, threshold: float) -> dict[str, Any]:
    """Plot data of a pair set: the ROC over all pairs (sklearn's rule, as IJB's) and the genuine / impostor
    cosine similarities with the chosen threshold, converted from insightface's squared distance of
    L2-normalised embeddings (cos = 1 - d/2). Empty when some distance is non-finite."""
    import numpy as np

    from cdface.eval.roc import roc_curve
    from cdface.eval.targets.ijb import log_spaced_curve

    cosine = 1.0 - pair_distances(fused) / 2.0
    same = np.asarray(issame, dtype=bool).reshape(-1)
    if not np.isfinite(cosine).all() or same.all() or not same.any():
        return {}
    fpr, tpr, _ = roc_curve(same, cosine)
    return {
        "roc": log_spaced_curve(fpr, tpr),
        "scores": {
            "genuine": cosine[same].tolist(),
            "impostor": cosine[~same].tolist(),
            "threshold": 1.0 - threshold / 2.0,
            "threshold_distance": threshold,
        },
    }


def _run_pairs(
    model: Any,
    pairs: Any,
    batch_size: int,
    nfolds: int,
    flip: bool,
    device: Any,
    num_workers: int,
    progress: bool,
    desc: str = "pairs",
    far_levels: Any = (),
    strict: bool = False,
) -> tuple[Any, Any, dict[str, Any], Any]:
    from cdface.data.pairs_bin import load_bin

    embedder = _as_embedder(model, batch_size, flip, device)
    pair_set = load_bin(pairs) if isinstance(pairs, (str, Path)) else pairs
    source = str(getattr(pair_set, "path", "<memory>"))
    n_pairs = len(pair_set.issame)
    if nfolds > 1 and n_pairs < nfolds:
        raise FormatError(source, None, f"at least {nfolds} pairs for {nfolds}-fold verification, got {n_pairs} pairs")
    size = tuple(embedder.input_cfg["input_size"])
    dataset = EncodedImages(pair_set.images, source, size)
    feats = extract_features(embedder, dataset, batch_size, num_workers, progress, desc=desc)
    sizes = check_input_sizes(feats.size_counts, size, source, strict=strict,
                              hint="the pair set's images are used as they are (a .bin holds aligned crops)")
    result = evaluate_pairs(feats.fused(), pair_set.issame, nfolds=nfolds, far_targets=far_levels)
    return result, feats, sizes, pair_set.issame


def evaluate_pair_target(
    embedder: FaceEmbedder,
    target: str,
    path: Path,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    nfolds: int = 10,
    far_levels: Any = (),
    strict: bool = False,
    quality: str | None = None,
) -> TargetResult:
    """Run one pair set and package its metrics with provenance (file sha256, protocol, speed).

    `far_levels`: TAR at these FARs too (`tar_at_far`). `strict`: images of another size than the model's
    input raise InputSizeError instead of a warning. `quality` (norm or a .npy): also the error-versus-reject
    curve (`cdface.eval.quality`). Raises FormatError for a missing file or fewer pairs than folds.
    """
    if not path.is_file():
        raise FormatError(path, None, f"the pair set of target {target!r} (file not found)")
    result, feats, sizes, issame = _run_pairs(
        embedder, path, batch_size, nfolds, embedder.flip, None, num_workers, progress, desc=Path(target).stem,
        far_levels=far_levels, strict=strict,
    )
    provenance = {
        "files": {str(path): sha256_file(path)},
        "protocol": {
            "name": "insightface pair verification",
            "nfolds": nfolds,
            "thresholds": "0..4 step 0.01 on squared L2 distance",
            "flip": embedder.flip,
        },
        "num_images": len(feats.plain),
        "input_sizes": sizes,
        "seconds": round(feats.seconds, 3),
        "images_per_second": round(feats.images_per_second, 1),
    }
    curves = pair_score_curves(feats.fused(), issame, result.threshold)
    metrics = result.to_dict()
    # insightface's XNorm: the mean norm of the un-fused embeddings (original and mirrored rows)
    metrics["xnorm"] = embedding_norm_stats(feats.plain, feats.flipped)
    # cosine thresholds at the standard FARs (and --far's), for `cdface compare/search --far --threshold-from`
    from cdface.eval.far_threshold import STANDARD_FARS, far_threshold_table

    cosine = 1.0 - pair_distances(feats.fused()) / 2.0
    metrics["far_thresholds"] = far_threshold_table(issame, cosine, (*STANDARD_FARS, *far_levels))
    if quality is not None:
        from cdface.data.pairs_bin import load_bin
        from cdface.eval.quality import erc_outputs, pair_set_erc

        erc = pair_set_erc(feats.plain, feats.fused(), load_bin(path).issame, quality, target)
        metrics["erc"], curves["erc"] = erc_outputs(*erc)
    return TargetResult(target, "pairs", metrics, provenance, curves)
