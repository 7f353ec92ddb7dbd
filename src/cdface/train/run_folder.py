"""One run per run folder: a new run never mixes its files with an older run's.

`claim_run_folder` runs before anything is written: a run folder that already holds files is refused unless
the config resumes it (`resume`) or replaces it (`overwrite: true`). `write_run_config` runs once the run has
started (data, model and resume set up without error): with `overwrite` it first removes the older run's
files; on a resume it drops the log records of steps after the resumed one (the crashed run's, which the
resumed run logs again); then it writes `config.yaml`, the config in force. A start that fails leaves the
folder as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from cdface.config import TrainConfig, dump_config
from cdface.errors import ConfigError
from cdface.files import atomic_write
from cdface.train.distributed import DistInfo
from cdface.train.health import truncate_health
from cdface.train.metrics_log import truncate_metrics

# What a run writes into its folder (and what `overwrite: true` removes); anything else is left alone.
RUN_FILES = (
    "config.yaml", "checkpoints", "metrics.jsonl", "health.txt", "backbone.pt", "model.json", "tensorboard",
    "training.png",
)


def run_folder_problem(cfg: TrainConfig, run_dir: Path) -> str | None:
    """Why a run with `cfg` may not start in `run_dir` (None when it may)."""
    if cfg.resume or cfg.overwrite or not run_dir.is_dir():
        return None
    held = sorted(p.name for p in run_dir.iterdir())
    if not held:
        return None
    shown = ", ".join(held[:5]) + (" ..." if len(held) > 5 else "")
    return (
        f"name: the run folder {run_dir} already holds a run ({shown}); continue it with resume=auto, "
        f"replace it with overwrite=true, or choose another name"
    )


def claim_run_folder(cfg: TrainConfig, run_dir: Path, info: DistInfo) -> None:
    """ConfigError on every rank when the run may not start in `run_dir`; rank 0 decides (a shared filesystem
    seen at slightly different moments must not split the ranks)."""
    verdict = [run_folder_problem(cfg, run_dir) if info.is_main else None]
    if info.enabled:
        torch.distributed.broadcast_object_list(verdict, src=0)
    if verdict[0]:
        raise ConfigError(verdict[0])


def write_run_config(
    cfg: TrainConfig, run_dir: Path, resumed_step: int | None = None, steps_per_epoch: int = 0
) -> None:
    """Rank 0, once the run has started: clear an overwritten run's files, cut the log and the health lines back
    to `resumed_step` (when resuming, the health lines to the epochs ended by then; 0 when `resume: auto` found
    no checkpoint: a killed first attempt's records go), then write `config.yaml`. The one place the log is cut
    back (`MetricsLog` only appends)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:
        for name in RUN_FILES:
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    if resumed_step is not None:
        truncate_metrics(run_dir / "metrics.jsonl", resumed_step)
        if steps_per_epoch > 0:
            truncate_health(run_dir / "health.txt", resumed_step // steps_per_epoch)
    atomic_write(run_dir / "config.yaml", dump_config(cfg))
