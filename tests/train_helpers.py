"""The small CPU training config the training tests start from (tiny IResNet, deterministic, no TensorBoard)."""

from __future__ import annotations

from pathlib import Path

from cdface.config import deep_merge


def tiny_run_config(tmp_path: Path, data: dict, name: str = "run", **overrides) -> dict:
    """A run of `iresnet_tiny` (embedding 32) on `data` (merged into the data section, no workers), one epoch of
    batch 16 at a constant lr, a checkpoint every 2 steps; `overrides` are merged over it (`deep_merge`)."""
    values = {
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "batch_size": 16,
        "epochs": 1.0,
        "device": "cpu",
        "deterministic": True,
        "tensorboard": False,
        "log_every": 1,
        "checkpoint_every": 2,
        "data": {"num_workers": 0, **data},
        "model": {"arch": "iresnet_tiny", "embedding_size": 32},
        "optim": {"lr": 0.05, "scheduler": "constant", "milestones": []},
    }
    return deep_merge(values, overrides)
