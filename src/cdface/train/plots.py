"""`training.png`: a run's curves from its metrics.jsonl, for readers without TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (an empty list when there is none yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_training(path: Path, run_dirs: list[Path]) -> Path:
    """Four panels over each run's own steps: CE (the CD loss on its own axis), train-batch and validation
    accuracy, learning rate, samples/s. Several runs (the quickstart's) share the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    (loss_ax, acc_ax), (lr_ax, speed_ax) = axes
    cd_ax = None  # the CD loss is on another scale than the CE: its own axis
    for run_dir in run_dirs:
        history = read_history(run_dir)
        name = Path(run_dir).name
        train = [r for r in history if "ce_loss" in r]
        steps = [r["step"] for r in train]
        loss_ax.plot(steps, [r["ce_loss"] for r in train], label=f"{name} CE")
        if any(r.get("cd_loss") for r in train):
            cd_ax = cd_ax or loss_ax.twinx()
            cd_ax.plot(steps, [r["cd_loss"] for r in train], "--", label=f"{name} CD (right axis)")
            cd_ax.set_ylabel("CD loss")
        acc_ax.plot(steps, [r.get("train_accuracy", float("nan")) for r in train], label=f"{name} train batch")
        for key in sorted({k for r in history for k in r if k.startswith("val/") and k.endswith("/accuracy")}):
            val = [r for r in history if key in r]
            acc_ax.plot([r["step"] for r in val], [r[key] for r in val], "o-", label=f"{name} {key[4:-9]} pairs")
        lr_ax.plot(steps, [r["lr"] for r in train], label=name)
        speed_ax.plot(steps, [r["samples_per_s"] for r in train], label=name)
    handles, labels = loss_ax.get_legend_handles_labels()
    if cd_ax is not None:
        more_handles, more_labels = cd_ax.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_ax.legend(handles, labels, fontsize=7)
    for ax, ylabel in ((loss_ax, "CE loss"), (acc_ax, "accuracy"), (lr_ax, "learning rate"), (speed_ax, "samples/s")):
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if ax is not loss_ax:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["plot_training", "read_history"]
