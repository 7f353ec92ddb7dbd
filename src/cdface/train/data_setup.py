"""Build the training set and the verification pair sets a config names."""

from __future__ import annotations

import logging
from pathlib import Path

from cdface.config import TrainConfig
from cdface.train.distributed import DistInfo, barrier
from cdface.train.verification import PairImages, load_pair_images

log = logging.getLogger("cdface.train")


def ensure_synthetic_set(cfg: TrainConfig, info: DistInfo) -> dict[str, Path]:
    """Build the built-in synthetic identity set once (rank 0), as RecordIO + a `.bin` of disjoint identities."""
    from cdface.data.synthetic import build_synthetic_benchmark

    root = Path(cfg.data.path or Path(cfg.output_dir) / "synthetic_data")
    paths = {"rec": root / "train.rec", "bin": root / "eval.bin"}
    if info.is_main and not (paths["rec"].exists() and (root / "train.idx").exists() and paths["bin"].exists()):
        log.info("building the synthetic face-identity set in %s", root)
        built = build_synthetic_benchmark(
            root,
            num_train_ids=cfg.data.synthetic_identities,
            images_per_id=cfg.data.synthetic_images_per_identity,
            num_eval_ids=cfg.data.synthetic_eval_identities,
            num_pairs=cfg.data.synthetic_pairs,
            seed=cfg.data.synthetic_seed,
        )
        paths = {"rec": Path(built["rec"]), "bin": Path(built["bin"])}
    barrier(info)
    return paths


def build_training_data(cfg: TrainConfig, info: DistInfo):
    """(dataset, {name: PairImages}) for the loop and its periodic verification."""
    from cdface.data.datasets import build_train_dataset
    from cdface.data.transforms import TrainTransform

    kind, path = cfg.data.kind, cfg.data.path
    val_targets = list(cfg.data.val_targets)
    if kind == "synthetic":
        paths = ensure_synthetic_set(cfg, info)
        kind, path = "recordio", str(paths["rec"])
        if not val_targets:
            val_targets = [str(paths["bin"])]
    transform = TrainTransform(
        flip_p=cfg.data.flip_p,
        random_resized_crop=tuple(cfg.data.random_resized_crop) or None,
        color_jitter=cfg.data.color_jitter,
        low_res_prob=cfg.data.low_res_prob,
        output="uint8",  # normalised by the trainer on its device: 4x fewer bytes out of the workers
    )
    dataset = build_train_dataset(kind, path, transform=transform, seed=cfg.seed)
    val_sets: dict[str, PairImages] = {}
    if info.is_main:
        for target in val_targets:
            val_sets[Path(target).stem] = load_pair_images(target)
    return dataset, val_sets
