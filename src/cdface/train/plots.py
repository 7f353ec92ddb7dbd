"""`training.png`: a run's curves from its metrics.jsonl, for readers without TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (an empty list when there is none yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


# Below this many log points a run's curves get markers: a 15-step smoke run logged once is a dot, not nothing.
FEW_POINTS = 20


def plot_training(path: Path, run_dirs: list[Path], start_steps: list[int] | None = None) -> Path:
    """Write `training_figure` to ``path`` (PNG); returns ``path``."""
    fig = training_figure(run_dirs, start_steps)  # selects the Agg backend before pyplot is imported
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def training_figure(run_dirs: list[Path], start_steps: list[int] | None = None) -> Any:
    """A matplotlib figure of four panels over the steps: CE (the CD loss on its own axis), train-batch and
    validation accuracy, learning rate, samples/s. Several runs (the quickstart's) share the panels;
    ``start_steps`` (one per run, default 0) shifts a run along the step axis, so that a stage 2 continues where
    its stage 1 ended instead of being drawn over it (a dotted line marks where it starts). The learning rate is
    drawn as a staircase (held from one log point to the next), as the schedule is one; a run with fewer than
    FEW_POINTS log points gets markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    (loss_ax, acc_ax), (lr_ax, speed_ax) = axes
    cd_ax = None  # the CD loss is on another scale than the CE: its own axis
    for index, run_dir in enumerate(run_dirs):
        start = start_steps[index] if start_steps else 0
        history = read_history(run_dir)
        name = Path(run_dir).name
        train = [r for r in history if "ce_loss" in r]
        steps = [start + r["step"] for r in train]
        marker = {"marker": "o", "markersize": 3} if len(train) < FEW_POINTS else {}
        (line,) = loss_ax.plot(steps, [r["ce_loss"] for r in train], label=f"{name} CE", **marker)
        if start:
            for ax in (loss_ax, acc_ax, lr_ax, speed_ax):
                ax.axvline(start, color=line.get_color(), linestyle=":", linewidth=1)
        if any(r.get("cd_loss") for r in train):
            cd_ax = cd_ax or loss_ax.twinx()
            cd_ax.plot(steps, [r["cd_loss"] for r in train], "--", color=line.get_color(),
                       label=f"{name} CD (right axis)", **marker)
            cd_ax.set_ylabel("CD loss")
        acc_ax.plot(steps, [r.get("train_accuracy", float("nan")) for r in train], label=f"{name} train batch",
                    **marker)
        for key in sorted({k for r in history for k in r if k.startswith("val/") and k.endswith("/accuracy")}):
            val = [r for r in history if key in r]
            acc_ax.plot([start + r["step"] for r in val], [r[key] for r in val], "o-",
                        label=f"{name} {key[4:-9]} pairs")
        lr_ax.plot(steps, [r["lr"] for r in train], label=name, drawstyle="steps-post", **marker)
        speed_ax.plot(steps, [r["samples_per_s"] for r in train], label=name, **marker)
    handles, labels = loss_ax.get_legend_handles_labels()
    if cd_ax is not None:
        more_handles, more_labels = cd_ax.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_ax.legend(handles, labels, fontsize=7)
    for ax, ylabel in ((loss_ax, "CE loss"), (acc_ax, "accuracy"), (lr_ax, "learning rate"), (speed_ax, "samples/s")):
        ax.set_xlabel("step" if not start_steps or not any(start_steps) else "step (stage 2 after stage 1)")
        ax.set_ylabel(ylabel)
        if ax is not loss_ax:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["FEW_POINTS", "plot_training", "read_history", "training_figure"]
