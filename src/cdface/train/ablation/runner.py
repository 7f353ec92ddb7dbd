"""`run_ablation`: stage 1 once, every variant x seed from its checkpoint, every model evaluated the same way."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from cdface.files import atomic_write, to_json_safe
from cdface.train.ablation.metrics import build_probe, cd_terms, evaluate_run, read_health
from cdface.train.ablation.presets import BASELINE, DEFAULT_VARIANTS, VARIANTS, stage_configs, variant_config
from cdface.train.ablation.report import format_ablation, summarise
from cdface.train.plots import read_history
from cdface.train.trainer import fit

log = logging.getLogger("cdface.ablate")


def run_ablation(
    out_dir: str | Path,
    preset: str = "cpu",
    seeds: tuple[int, ...] = (0, 1, 2),
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    scale: float = 1.0,
    overrides: dict[str, Any] | None = None,
    baseline: str = BASELINE,
) -> dict[str, Any]:
    """Train stage 1 once, every variant x seed from it, evaluate all; writes ablation.json / ablation.md
    (after every seed, so a study stopped early keeps the tables of the seeds it finished). Each variant is
    paired with ``baseline`` (one of ``variants``) seed by seed.

    Runs resume (``resume: auto``), so an interrupted study continues where it stopped and a finished run
    is only re-evaluated.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if baseline not in variants:
        raise ValueError(f"baseline {baseline!r} is not one of the variants run ({', '.join(variants)})")
    stage1_cfg, stage2 = stage_configs(preset, out_dir, scale, overrides=overrides)
    stage1_cfg.resume = "auto"
    stage1 = fit(stage1_cfg)
    use_cuda = stage1_cfg.device == "cuda" or (stage1_cfg.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    probe = build_probe(stage1_cfg, stage1.checkpoint)
    stage1_row = evaluate_run(stage1.run_dir, probe, device) | {"variant": "stage1", "seed": stage1_cfg.seed}
    rows: list[dict[str, Any]] = []
    result = _write_result(out_dir, preset, scale, baseline, stage1_row, rows, read_health(stage1.run_dir))
    for seed in seeds:
        for variant in variants:
            run = fit(variant_config(stage2, variant, seed, str(stage1.checkpoint)))
            row = evaluate_run(run.run_dir, probe, device)
            rows.append(row | cd_terms(read_history(run.run_dir)) | {"variant": variant, "seed": seed})
            log.info("%s seed %d: accuracy %.4f", variant, seed, row["accuracy"])
        result = _write_result(out_dir, preset, scale, baseline, stage1_row, rows, read_health(stage1.run_dir))
    return result


def _write_result(
    out_dir: Path, preset: str, scale: float, baseline: str, stage1_row: dict[str, Any], rows: list[dict[str, Any]],
    stage1_health: list[str],
) -> dict[str, Any]:
    result = {"preset": preset, "scale": scale, "baseline": baseline, "stage1": _plain(stage1_row),
              "rows": [_plain(r) for r in rows], "summary": summarise(rows, baseline),
              "health": {"stage1": stage1_health}}
    atomic_write(out_dir / "ablation.json", json.dumps(to_json_safe(result), indent=1, sort_keys=True, allow_nan=False))
    atomic_write(out_dir / "ablation.md", format_ablation(result))
    return result


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "scores"}
