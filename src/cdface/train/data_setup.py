"""Build the training set and the verification pair sets a config names."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cdface.config import TrainConfig
from cdface.errors import ConfigError
from cdface.threads import plan_threads
from cdface.train.distributed import DistInfo, barrier
from cdface.train.verification import PairImages, load_pair_images

log = logging.getLogger("cdface.train")


def ensure_synthetic_set(cfg: TrainConfig, info: DistInfo) -> dict[str, Path]:
    """Build the built-in synthetic identity set once (rank 0), as RecordIO + a `.bin` of disjoint identities."""
    from cdface.data.synthetic import build_synthetic_benchmark

    root = Path(cfg.data.path or Path(cfg.output_dir) / "synthetic_data")
    paths = {"rec": root / "train.rec", "bin": root / "eval.bin"}
    if info.is_main and not _synthetic_set_matches(cfg, root):
        log.info("building the synthetic face-identity set in %s", root)
        built = build_synthetic_benchmark(
            root,
            num_train_ids=cfg.data.synthetic_identities,
            images_per_id=cfg.data.synthetic_images_per_identity,
            num_eval_ids=cfg.data.synthetic_eval_identities,
            num_pairs=cfg.data.synthetic_pairs,
            seed=cfg.data.synthetic_seed,
            workers=plan_threads(cfg.data.num_workers).cores,  # rendering is the slow part: every core
        )
        paths = {"rec": Path(built["rec"]), "bin": Path(built["bin"])}
    barrier(info)
    return paths


def _synthetic_set_matches(cfg: TrainConfig, root: Path) -> bool:
    """Whether ``root`` holds a built set of the configured sizes and seed (a set of other sizes is rebuilt)."""
    if not all((root / name).exists() for name in ("train.rec", "train.idx", "eval.bin", "manifest.json")):
        return False
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        wanted = {
            "classes": cfg.data.synthetic_identities,
            "train_images": cfg.data.synthetic_identities * cfg.data.synthetic_images_per_identity,
            "pairs": cfg.data.synthetic_pairs,
            "seed": cfg.data.synthetic_seed,
        }
        first, end = manifest["eval_identities"]
        same_eval = end - first == cfg.data.synthetic_eval_identities
        return same_eval and all(manifest.get(k) == v for k, v in wanted.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


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
    if not str(path).strip():
        raise ConfigError(f"data.path is empty: set it to the training set for data.kind={kind} "
                          "(a RecordIO .rec or its folder, an image folder, or an image list)")
    transform = TrainTransform(
        flip_p=cfg.data.flip_p,
        random_resized_crop=tuple(cfg.data.random_resized_crop) or None,
        color_jitter=cfg.data.color_jitter,
        low_res_prob=cfg.data.low_res_prob,
        output="uint8",  # normalised by the trainer on its device: 4x fewer bytes out of the workers
    )
    dataset = build_train_dataset(
        kind,
        path,
        transform=transform,
        cache_dir=cfg.data.cache_dir or None,
        cache_labels=cfg.data.label_cache,
        seed=cfg.seed,
        max_pixels=cfg.data.max_image_pixels or None,
    )
    val_sets: dict[str, PairImages] = {}
    if info.is_main:
        for target in val_targets:
            val_sets[Path(target).stem] = load_pair_images(target, max_pixels=cfg.data.max_image_pixels or None)
    return dataset, val_sets
