"""`run_ablation`: stage 1 once per stage-1 seed, every variant x seed from its checkpoint, every model evaluated
the same way."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from cdface.config import deep_merge
from cdface.files import atomic_write, to_json_safe
from cdface.train.ablation.metrics import build_probe, cd_terms, evaluate_run, read_health
from cdface.train.ablation.presets import BASELINE, DEFAULT_VARIANTS, VARIANTS, stage_configs, variant_config
from cdface.train.ablation.report import format_ablation, mean_row, summarise, summarise_by_stage1
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
    stage1_seeds: tuple[int, ...] = (0,),
) -> dict[str, Any]:
    """Train stage 1 once per stage-1 seed, every variant x seed from it, evaluate all; writes ablation.json /
    ablation.md (after every seed, so a study stopped early keeps the tables of the seeds it finished). Each
    variant is paired with ``baseline`` (one of ``variants``) on the same stage 1 and seed.

    Several stage-1 seeds measure what one cannot: a paired interval over stage-2 seeds is conditional on its
    stage 1 (on the cpu preset, the sign of a TAR@FAR=1e-2 difference changed with the stage 1,
    docs/method.md). Stage-1 seed 0 trains in ``out_dir``, seed k in ``out_dir/stage1_seed<k>``; all share
    ``out_dir/data``.

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
    if not stage1_seeds or len(set(stage1_seeds)) != len(stage1_seeds):
        raise ValueError(f"stage-1 seeds must be distinct and at least one, got {stage1_seeds}")
    shared_data = {"data": {"path": str(out_dir / "data")}}
    stage1_rows: list[dict[str, Any]] = []
    health: dict[str, list[str]] = {}
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for stage1_seed in stage1_seeds:
        runs_dir = out_dir if stage1_seed == 0 else out_dir / f"stage1_seed{stage1_seed}"
        stage1_cfg, stage2 = stage_configs(preset, runs_dir, scale, seed=stage1_seed,
                                           overrides=deep_merge(shared_data, overrides or {}))
        stage1_cfg.resume = "auto"
        stage1 = fit(stage1_cfg)
        use_cuda = stage1_cfg.device == "cuda" or (stage1_cfg.device == "auto" and torch.cuda.is_available())
        device = torch.device("cuda" if use_cuda else "cpu")
        probe = build_probe(stage1_cfg, stage1.checkpoint)
        stage1_rows.append(evaluate_run(stage1.run_dir, probe, device)
                           | {"variant": "stage1", "seed": stage1_cfg.seed, "stage1_seed": stage1_seed})
        health[f"stage1_seed{stage1_seed}" if stage1_seed else "stage1"] = read_health(stage1.run_dir)
        result = _write_result(out_dir, preset, scale, baseline, stage1_rows, rows, health)
        for seed in seeds:
            for variant in variants:
                run = fit(variant_config(stage2, variant, seed, str(stage1.checkpoint)))
                row = evaluate_run(run.run_dir, probe, device)
                rows.append(row | cd_terms(read_history(run.run_dir))
                            | {"variant": variant, "seed": seed, "stage1_seed": stage1_seed})
                log.info("%s stage-1 seed %d, seed %d: accuracy %.4f", variant, stage1_seed, seed, row["accuracy"])
            result = _write_result(out_dir, preset, scale, baseline, stage1_rows, rows, health)
    return result


def _write_result(
    out_dir: Path, preset: str, scale: float, baseline: str, stage1_rows: list[dict[str, Any]],
    rows: list[dict[str, Any]], health: dict[str, list[str]],
) -> dict[str, Any]:
    # "stage1" keeps its one-row meaning for a single stage 1 (the mean over several otherwise)
    result = {"preset": preset, "scale": scale, "baseline": baseline, "stage1": mean_row(stage1_rows),
              "stage1_runs": [_plain(r) for r in stage1_rows],
              "rows": [_plain(r) for r in rows], "summary": summarise(rows, baseline),
              "by_stage1": summarise_by_stage1(rows, baseline), "health": health}
    atomic_write(out_dir / "ablation.json", json.dumps(to_json_safe(result), indent=1, sort_keys=True, allow_nan=False))
    atomic_write(out_dir / "ablation.md", format_ablation(result))
    return result


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "scores"}
