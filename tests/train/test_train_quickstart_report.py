"""The quickstart's report and training.png, from hand-written run histories (no training)."""

from __future__ import annotations

import json

import pytest

from cdface.config import config_from_dict
from cdface.train.plots import training_figure
from cdface.train.quickstart import ARCFACE, CD, STAGE1, conclusions


def _run(folder, steps, lrs, cd=False):
    folder.mkdir(parents=True)
    lines = [json.dumps({"step": s, "epoch": s / 10, "ce_loss": 10.0 - s / 100, "lr": lr, "train_accuracy": s / 100,
                         "samples_per_s": 50.0, **({"cd_loss": 0.5} if cd else {})}) for s, lr in zip(steps, lrs)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _lines(ax, name):
    return [line for line in ax.get_lines() if line.get_label().startswith(name)]


def test_stage2_continues_the_step_axis_and_the_lr_is_a_staircase(tmp_path):
    import matplotlib.pyplot as plt

    stage1 = _run(tmp_path / "stage1", list(range(10, 110, 10)), [0.1] * 5 + [0.01] * 5)
    stage2 = _run(tmp_path / "stage2", [10, 20, 30], [0.01, 0.01, 0.001], cd=True)
    fig = training_figure([stage1, stage2], start_steps=[0, 100])
    loss_ax, _, lr_ax, _ = fig.axes[:4]
    # stage 2 was drawn over stage 1 (both from step 10): it now starts where stage 1 ended
    (s2_loss,) = _lines(loss_ax, "stage2 CE")
    assert list(s2_loss.get_xdata()) == [110, 120, 130]
    assert list(_lines(loss_ax, "stage1 CE")[0].get_xdata())[-1] == 100
    (s2_cd,) = _lines(fig.axes[-1], "stage2 CD")  # the CD loss on its own axis, in its run's colour
    assert list(s2_cd.get_xdata()) == [110, 120, 130] and s2_cd.get_color() == s2_loss.get_color()
    # the step schedule was joined by slopes between log points; it is drawn as held values
    lr_lines = [line for line in lr_ax.get_lines() if line.get_label() in ("stage1", "stage2")]
    assert len(lr_lines) == 2 and all(line.get_drawstyle() == "steps-post" for line in lr_lines)
    # a run with 3 log points gets markers (a 1-point run drew nothing visible); a long run stays a line
    assert s2_loss.get_marker() == "o"
    assert _lines(loss_ax, "stage1 CE")[0].get_marker() == "o"  # 10 points: still few
    plt.close(fig)
    long_run = _run(tmp_path / "long", list(range(1, 101)), [0.1] * 100)
    fig = training_figure([long_run])
    assert _lines(fig.axes[0], "long CE")[0].get_marker() in ("None", "", None)
    plt.close(fig)


def _rows(stage1_train_accuracy=0.95):
    metrics = {"accuracy": 0.9, "accuracy_std": 0.02, "tar_at_far_1e-2": 0.5, "tar_at_far_1e-1": 0.8,
               "hard_pair_accuracy": 0.7, "easy_intra_class_variance": 0.2, "hardest_own_cosine": 0.6,
               "hardest_nearest_wrong_cosine": 0.5, "cd_closeness": float("nan"), "cd_diversity": float("nan"),
               "steps": 15}
    return [metrics | {"model": STAGE1, "train_accuracy": stage1_train_accuracy},
            metrics | {"model": CD, "accuracy": 0.95, "train_accuracy": 0.9, "cd_closeness": 0.1, "cd_diversity": 0.2},
            metrics | {"model": ARCFACE, "accuracy": 0.91, "train_accuracy": 0.9}]


def test_a_smoke_run_says_so_and_draws_no_conclusion():
    cfg = config_from_dict({"method": "cd"})
    full = conclusions(_rows(), cfg, scale=1.0)
    assert "CD reaches 95.00 %, 4.00 points above ArcFace continued" in full
    # --scale 0.2 (15 steps, not converged) compared CD with ArcFace like a full run
    smoke = conclusions(_rows(), cfg, scale=0.2)
    assert smoke.startswith("- Smoke run (`--scale 0.2`)") and "no conclusion is drawn" in smoke
    assert "points" not in smoke and "CD reaches" not in smoke and "beat" not in smoke
    unconverged = conclusions(_rows(stage1_train_accuracy=0.1), cfg, scale=1.0)
    assert "Stage 1 did not converge" in unconverged and "CD reaches" not in unconverged


@pytest.mark.parametrize("scale, log_every", [(1.0, 10), (0.5, 5), (0.2, 2), (0.05, 1)])
def test_a_shrunk_preset_logs_often_enough_to_plot(tmp_path, scale, log_every):
    from cdface.train.ablation import preset_base

    assert preset_base("cpu", tmp_path, scale)["log_every"] == log_every
