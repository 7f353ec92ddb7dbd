"""The ablation's runs as configs: the stage-2 variants, the ``cpu`` and ``gpu`` presets, stage 1 and stage 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cdface.config import TrainConfig, config_from_dict, deep_merge

# name -> (what it is, config override of the stage-2 run)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "arcface": ("ArcFace continued", {"method": "arcface"}),
    "cd": ("closeness & diversity", {"method": "cd"}),
    "closeness": ("closeness only (wd=0)", {"method": "cd", "cd": {"wd": 0.0}}),
    "diversity": ("diversity only (wc=0)", {"method": "cd", "cd": {"wc": 0.0}}),
    "cd_wd0.5": ("CD, wd=0.5", {"method": "cd", "cd": {"wd": 0.5}}),
    "cd_wd0.25": ("CD, wd=0.25", {"method": "cd", "cd": {"wd": 0.25}}),
    "cd_wd0.1": ("CD, wd=0.1", {"method": "cd", "cd": {"wd": 0.1}}),
    "cd_per_class": ("CD, per-class centres", {"method": "cd", "cd": {"per_class_centres": True}}),
    "cd_interval1": ("CD every step", {"method": "cd", "cd": {"interval": 1}}),
    "cd_interval5": ("CD every 5th step", {"method": "cd", "cd": {"interval": 5}}),
    "cd_s64": ("CD, cd.s=64 (not the head's s)", {"method": "cd", "cd": {"s": 64.0}}),
}
DEFAULT_VARIANTS = ("arcface", "cd", "closeness", "diversity")
BASELINE = "arcface"



def preset_base(preset: str, out_dir: Path, scale: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """The shared settings of every run of a preset, as a config mapping.

    ``cpu``: the embedded default (docs/quickstart.md explains the regime): iresnet_tiny, 400 synthetic
    identities x 12 images, ArcFace s=16 m=0.5, batch 64, one thread + one loader worker on two cores.
    ``gpu``: iresnet50 on 20,000 identities x 10 images, bf16, batch 512, for one H100/H200 (~8 minutes with
    the default variants and one seed; see docs/method.md).
    ``scale`` shrinks the data (tests and smoke runs use ~0.1).
    """
    if preset == "cpu":
        identities, per_id, eval_ids, pairs = max(20, int(400 * scale)), 12, max(20, int(100 * scale)), 600
        return {
            "output_dir": str(out_dir),
            "seed": seed,
            "batch_size": 64,
            "device": "cpu",
            # a shrunk run logs more often, so that its curves and health windows still have points
            "log_every": max(1, round(10 * min(1.0, scale))),
            "checkpoint_every": 100_000,
            "tensorboard": False,
            "deterministic": True,
            # the pair accuracy is measured once per model at the end, not at every epoch (~6 s each here)
            "verify_at_epoch_end": False,
            "data": {
                "kind": "synthetic",
                "path": str(out_dir / "data"),
                # decoding 64 small JPEGs is ~8 % of a step: on 2 cores, 2 torch threads and no loader worker
                # train 1.4x faster than 1 + 1 (benchmarks/RESULTS.md)
                "num_workers": 0,
                "synthetic_identities": identities,
                "synthetic_images_per_identity": per_id,
                "synthetic_eval_identities": eval_ids,
                "synthetic_pairs": pairs if scale >= 0.5 else 200,
                "synthetic_seed": 0,
            },
            "model": {"arch": "iresnet_tiny", "embedding_size": 128},
            "head": {"name": "arcface", "params": {"s": 16.0, "m": 0.5}},
            "optim": {"lr": 0.1, "milestones": [], "warmup_epochs": 0.0},
            "cd": {"num_classes": 8, "num_easy": 7, "num_hard": 1, "num_negatives": 50, "interval": 2},
        }
    if preset == "gpu":
        identities = max(100, int(20_000 * scale))
        return {
            "output_dir": str(out_dir),
            "seed": seed,
            "batch_size": 512,
            "device": "cuda",
            "precision": "bf16",
            "log_every": 50,
            "checkpoint_every": 100_000,
            "tensorboard": False,
            "data": {
                "kind": "synthetic",
                "path": str(out_dir / "data"),
                "num_workers": 8,
                "synthetic_identities": identities,
                "synthetic_images_per_identity": 10,
                "synthetic_eval_identities": max(50, int(2_000 * scale)),
                "synthetic_pairs": 6000 if scale >= 0.5 else 600,
                "synthetic_seed": 0,
            },
            "model": {"arch": "iresnet50", "embedding_size": 512, "channels_last": True},
            "head": {"name": "arcface", "params": {"s": 32.0, "m": 0.5}},
            "optim": {"lr": 0.1, "milestones": [], "warmup_epochs": 0.5},
            "cd": {"num_classes": 64, "num_easy": 7, "num_hard": 1, "num_negatives": 500, "interval": 5},
        }
    raise ValueError(f"unknown preset {preset!r}; choose cpu or gpu")


def stage_configs(
    preset: str, out_dir: Path, scale: float = 1.0, seed: int = 0, overrides: dict[str, Any] | None = None
) -> tuple[TrainConfig, dict[str, Any]]:
    """(the stage-1 config, the stage-2 base mapping that each variant overrides); ``overrides`` (a nested
    mapping, e.g. from ``key=value`` arguments) apply to every run."""
    base = deep_merge(preset_base(preset, out_dir, scale, seed), overrides or {})
    if preset == "cpu":
        # 7 epochs, lr x0.1 at 4.5 and 6 (scaled with the epochs), after a half-epoch warm-up
        stage1_epochs = max(1.0, round(7 * scale))
        stage2_epochs = max(1.0, round(3 * scale))
        milestones = [stage1_epochs * 4.5 / 7, stage1_epochs * 6.0 / 7]
        stage1 = {"epochs": stage1_epochs, "optim": {"warmup_epochs": 0.5, "milestones": milestones}}
    else:
        stage1_epochs, stage2_epochs = 3.0, 1.0
        stage1 = {"epochs": stage1_epochs, "optim": {"milestones": [2.0, 2.6]}}
    stage1_cfg = config_from_dict(deep_merge(base, stage1 | {"name": "stage1_arcface", "method": "arcface"}))
    stage2 = deep_merge(base, {"epochs": stage2_epochs, "optim": {"lr": 0.01, "milestones": [stage2_epochs * 0.75]}})
    return stage1_cfg, stage2


def variant_config(stage2: dict[str, Any], variant: str, seed: int, init_from: str) -> TrainConfig:
    """The stage-2 run of ``variant`` with ``seed`` (its sampling and augmentation), from ``init_from``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    _, override = VARIANTS[variant]
    name = f"stage2_{variant}" + (f"_seed{seed}" if seed else "")
    return config_from_dict(
        deep_merge(stage2, override | {"name": name, "seed": seed, "init_from": init_from, "resume": "auto"})
    )
