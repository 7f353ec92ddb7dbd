"""Build the training set and the verification pair sets a config names."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cdface.config import TrainConfig
from cdface.errors import ConfigError
from cdface.models.input_contract import DEFAULT_INPUT_CFG, InputContract
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
    dataset = build_train_dataset(
        kind,
        path,
        cache_dir=cfg.data.cache_dir or None,
        cache_labels=cfg.data.label_cache,
        seed=cfg.seed,
        max_pixels=cfg.data.max_image_pixels or None,
    )
    # The crops are used at the set's own size (its first decodable image's; a stray image of another size is
    # resized to it); `training_input_contract` then refuses a set whose size is not the model's input size.
    size = dataset.first_image_size() or DEFAULT_INPUT_CFG["input_size"]
    if size[0] != size[1]:
        raise ConfigError(f"data.path {path}: the training images are {size[0]}x{size[1]}; training takes square "
                          "aligned face crops (insightface's are 112x112)")
    dataset.transform = TrainTransform(
        flip_p=cfg.data.flip_p,
        random_resized_crop=tuple(cfg.data.random_resized_crop) or None,
        color_jitter=cfg.data.color_jitter,
        low_res_prob=cfg.data.low_res_prob,
        size=size[0],
        output="uint8",  # the model's InputContract normalises on the trainer's device: 4x fewer bytes out of workers
    )
    val_sets: dict[str, PairImages] = {}
    if info.is_main:
        for target in val_targets:
            val_sets[Path(target).stem] = load_pair_images(target, max_pixels=cfg.data.max_image_pixels or None)
    return dataset, val_sets


def training_input_contract(backbone: Any, dataset: Any, val_sets: Mapping[str, PairImages]) -> InputContract:
    """The backbone's input contract, which the training loop applies to every batch; ConfigError at start when
    the training crops or a verification set's are not of the model's input size.

    A mismatch is refused, not resized: a resized aligned crop is not the crop the alignment template gives at
    the model's size (insightface's 128x128 template is the 112x112 one shifted 8 px right, not a zoom), and
    insightface trains on its 112x112 crops as they are. (`cdface eval` resizes, with a warning.)
    """
    contract = InputContract.from_model(backbone)
    arch = getattr(backbone, "arch", type(backbone).__name__)
    side = getattr(dataset.transform, "size", None)
    if side is not None and (side, side) != contract.input_size:
        raise ConfigError(
            f"data.path {dataset.source}: the training images are {side}x{side} but model {arch} takes "
            f"{contract.size_text()} crops (its input_cfg); train on aligned crops of the model's input size "
            "or choose a model whose input size is the data's"
        )
    for name, pairs in val_sets.items():
        size = tuple(pairs.images.shape[1:3])
        if size != contract.input_size:
            raise ConfigError(
                f"data.val_targets {pairs.source or name}: the pair images are {size[0]}x{size[1]} but model {arch} "
                f"takes {contract.size_text()} crops (its input_cfg); verify on a pair set of the model's input size"
            )
    return contract
