"""What every model of a study is measured on (the probe) and how: pair accuracy, TAR@FAR, the mechanism
metrics on the training set, the CD terms and the health lines logged by the trainer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cdface.config import TrainConfig
from cdface.embedding import l2_normalize
from cdface.eval.roc import roc_curve, tar_at_far
from cdface.eval.verification import evaluate_pairs, kfold_bounds, pair_distances
from cdface.models.input_contract import InputContract
from cdface.threads import plan_threads, threads_applied
from cdface.train import checkpoint as ckpt
from cdface.train.data_setup import ensure_synthetic_set
from cdface.train.distributed import DistInfo
from cdface.train.verification import PairImages, embed_with_flip, load_pair_images, model_input

HARDEST_FRACTION = 0.05



@dataclass
class Probe:
    """The data every model is measured on, decoded once."""

    pairs: PairImages
    pair_hard: np.ndarray  # (N,) bool: the pair holds an image the generator drew hard
    train_images: np.ndarray  # (M, 112, 112, 3) uint8
    train_labels: np.ndarray  # (M,) int64
    stage1_scores: np.ndarray  # (M,) the stage-1 difficulty scores (EMA of target cosines)
    percentile: float  # the CD split: easy = score >= the p-quantile


def build_probe(cfg: TrainConfig, stage1_checkpoint: Path) -> Probe:
    """Decode the synthetic set of ``cfg`` (training images without augmentation, the eval pairs)."""
    from cdface.data.datasets import RecordIODataset
    from cdface.data.synthetic import eval_hard_flags

    paths = ensure_synthetic_set(cfg, DistInfo())
    root = Path(paths["rec"]).parent
    pairs = load_pair_images(str(paths["bin"]))
    flags = eval_hard_flags(root / "manifest.json")
    dataset = RecordIODataset(str(paths["rec"]))
    images = np.stack([dataset.load_image(i) for i in range(len(dataset))])
    scores = ckpt.load_checkpoint(stage1_checkpoint)["scores"]["scores"]
    return Probe(
        pairs=pairs,
        pair_hard=flags[0::2] | flags[1::2],
        train_images=images,
        train_labels=np.asarray(dataset.labels, dtype=np.int64),
        stage1_scores=np.asarray(scores, dtype=np.float64),
        percentile=cfg.cd.percentile,
    )


@torch.no_grad()
def embed(backbone: torch.nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised embeddings (N, D) of uint8 RGB images, without flip (the training view)."""
    out, contract = [], InputContract.from_model(backbone)
    for start in range(0, len(images), batch_size):
        x = model_input(images[start : start + batch_size], device, contract)
        out.append(F.normalize(backbone(x).float(), dim=1))
    return torch.cat(out)


def mechanism_metrics(
    embeddings: torch.Tensor, labels: np.ndarray, centres: torch.Tensor, scores: np.ndarray, percentile: float
) -> dict[str, float]:
    """How a model's training-set features sit against its own class centres (see the module docstring).

    ``embeddings`` (N, D) unit rows, ``labels`` (N,), ``centres`` (C, D), ``scores`` (N,) stage-1 scores.
    """
    labels_t = torch.as_tensor(labels, device=embeddings.device)
    unit_centres = F.normalize(centres.float().to(embeddings.device), dim=1)
    cos = embeddings @ unit_centres.T  # (N, C)
    rows = torch.arange(len(labels_t), device=embeddings.device)
    own = cos[rows, labels_t]
    others = cos.clone()
    others[rows, labels_t] = float("-inf")
    nearest_wrong = others.max(dim=1).values

    split = np.quantile(scores, percentile)
    easy = torch.as_tensor(scores >= split, device=embeddings.device)
    num_classes = centres.shape[0]
    sums = torch.zeros(num_classes, embeddings.shape[1], device=embeddings.device).index_add_(
        0, labels_t[easy], embeddings[easy]
    )
    counts = torch.bincount(labels_t[easy], minlength=num_classes).float()
    has_pair = counts >= 2
    intra_var = 1.0 - (sums[has_pair] / counts[has_pair, None]).pow(2).sum(dim=1)

    hardest = torch.as_tensor(scores <= np.quantile(scores, HARDEST_FRACTION), device=embeddings.device)
    return {
        "train_accuracy": float((cos.argmax(dim=1) == labels_t).float().mean()),
        "easy_intra_class_variance": float(intra_var.mean()),
        "hardest_own_cosine": float(own[hardest].mean()),
        "hardest_nearest_wrong_cosine": float(nearest_wrong[hardest].mean()),
    }


def hard_pair_accuracy(fused: np.ndarray, issame: np.ndarray, hard: np.ndarray, fold_thresholds: np.ndarray) -> float:
    """Accuracy on the pairs flagged ``hard``, each fold judged at its own (training-fold) best threshold, as
    insightface's 10-fold protocol judges the whole fold. NaN when no pair is flagged."""
    if not hard.any():
        return float("nan")
    dist = pair_distances(fused, backend="numpy")
    threshold = np.empty(dist.shape[0])
    for k, (start, stop) in enumerate(kfold_bounds(dist.shape[0], len(fold_thresholds))):
        threshold[start:stop] = fold_thresholds[k]
    correct = (dist < threshold) == issame
    return float(correct[hard].mean())


def load_backbone(run_dir: Path, device: torch.device) -> torch.nn.Module:
    """The run's exported ``backbone.pt`` + ``model.json``, through the evaluator's safe loader, in eval mode."""
    from cdface.inference.loading import load_embedding_model

    return load_embedding_model(run_dir, device=str(device)).module.eval()


def evaluate_run(run_dir: Path, probe: Probe, device: torch.device) -> dict[str, Any]:
    """Pair accuracy, TAR@FAR, the cosine scores (for the ROC) and the mechanism metrics of one run
    (no loader workers here: every core of the process goes to torch)."""
    with threads_applied(plan_threads(0)):
        return _evaluate_run(run_dir, probe, device)


def _evaluate_run(run_dir: Path, probe: Probe, device: torch.device) -> dict[str, Any]:
    backbone = load_backbone(run_dir, device)
    emb, emb_flip = embed_with_flip(backbone, probe.pairs.images, device)
    fused = emb + emb_flip
    result = evaluate_pairs(fused, probe.pairs.issame)
    unit = l2_normalize(fused)
    cosine = np.sum(unit[0::2] * unit[1::2], axis=1)
    fpr, tpr, _ = roc_curve(probe.pairs.issame.astype(np.int64), cosine)
    tar = tar_at_far(fpr, tpr, (0.01, 0.1))  # the evaluator's (insightface's) TAR@FAR rule
    state = ckpt.load_checkpoint(ckpt.newest_valid_checkpoint(run_dir))
    centres = state["head"]["core.weight"]
    features = embed(backbone, probe.train_images, device)
    row = {
        "accuracy": result.accuracy,
        "accuracy_std": result.accuracy_std,
        "tar_at_far_1e-2": tar[0.01],
        "tar_at_far_1e-1": tar[0.1],
        "hard_pair_accuracy": hard_pair_accuracy(fused, probe.pairs.issame, probe.pair_hard, result.fold_thresholds),
        "hard_pairs": int(probe.pair_hard.sum()),
        "steps": int(state["step"]),
        "run": str(run_dir),
    }
    row |= mechanism_metrics(features, probe.train_labels, centres, probe.stage1_scores, probe.percentile)
    row["scores"] = cosine
    return row


def cd_terms(history: list[dict[str, Any]]) -> dict[str, float]:
    """The mean closeness and diversity terms logged over a run (NaN for runs without CD)."""
    close = [r["cd_closeness"] for r in history if "cd_closeness" in r]
    diverse = [r["cd_diversity"] for r in history if "cd_diversity" in r]
    return {
        "cd_closeness": float(np.mean(close)) if close else float("nan"),
        "cd_diversity": float(np.mean(diverse)) if diverse else float("nan"),
    }


def read_health(run_dir: Path) -> list[str]:
    """The run's per-epoch health lines (``health.txt``, written by the trainer)."""
    path = Path(run_dir) / "health.txt"
    return path.read_text().splitlines() if path.exists() else []
