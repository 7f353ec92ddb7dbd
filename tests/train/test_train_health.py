"""Training health: the collapse plateau, the device-side accumulators, and the warning on a real run."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from cdface.config import config_from_dict
from cdface.heads import create_margin
from cdface.train.health import TrainingHealth, collapse_plateau, health_line
from cdface.train.trainer import fit


@pytest.mark.parametrize("classes", [2, 300, 85742])
@pytest.mark.parametrize(("s", "m"), [(64.0, 0.5), (16.0, 0.5), (32.0, 0.3)])
def test_arcface_plateau_is_the_closed_form(classes, s, m):
    # all cosines 0: target logit s*cos(pi/2 + m) = -s*sin(m), the C-1 others 0
    expected = math.log(math.exp(-s * math.sin(m)) + classes - 1) + s * math.sin(m)
    assert collapse_plateau(create_margin("arcface", s=s, m=m), classes) == pytest.approx(expected, rel=1e-6)


def test_cosface_plateau_is_the_closed_form():
    s, m, classes = 64.0, 0.35, 1000
    expected = math.log(math.exp(-s * m) + classes - 1) + s * m
    assert collapse_plateau(create_margin("cosface", s=s, m=m), classes) == pytest.approx(expected, rel=1e-6)


def test_plateau_leaves_a_stateful_margin_untouched():
    margin = create_margin("curricularface")
    margin.train()
    before = {k: v.clone() for k, v in margin.state_dict().items()}
    collapse_plateau(margin, 100)
    assert margin.training
    for key, value in margin.state_dict().items():
        assert torch.equal(value, before[key])


def test_accumulators_match_a_direct_computation():
    health = TrainingHealth(plateau=10.0, device=torch.device("cpu"), collapse_after_steps=0)
    g = torch.Generator().manual_seed(0)
    steps = []
    for _ in range(4):
        cos = torch.rand(8, generator=g) * 2 - 1
        cos[0] = float("nan")  # a label -1 row: no target
        correct = torch.rand(8, generator=g) > 0.5
        ce = torch.rand((), generator=g) * 5
        health.update(ce, correct, cos)
        steps.append((ce, correct, cos))
    health.update_cd(torch.tensor(3.0), torch.tensor(1.0), torch.tensor(2.5))
    stats = health.read_window()
    valid = torch.cat([c[1:] for _, _, c in steps])
    hits = torch.cat([k[1:] for _, k, _ in steps])
    assert stats.steps == 4
    assert stats.accuracy == pytest.approx(float(hits.float().mean()))
    assert stats.target_cosine == pytest.approx(float(valid.mean()), abs=1e-6)
    assert stats.ce_loss == pytest.approx(float(torch.stack([c for c, _, _ in steps]).mean()), abs=1e-6)
    assert (stats.cd_steps, stats.cd_loss, stats.closeness, stats.diversity) == (1, 3.0, 1.0, 2.5)
    assert health.read_window() is None  # a new window starts empty
    assert health.read_epoch().steps == 4  # the epoch kept counting


def test_collapse_rule_and_single_warning():
    health = TrainingHealth(plateau=36.4, device=torch.device("cpu"), collapse_after_steps=100)
    # window sums: steps, rows, correct rows, sum of target cosines, sum of CE, then the four CD sums
    sums = torch.tensor([[10, 640, 40, 640 * -0.1, 10 * 35.0, 0, 0, 0, 0],
                         [10, 640, 400, 640 * 0.5, 10 * 20.0, 0, 0, 0, 0]], dtype=torch.float64)
    stuck, learning = TrainingHealth._stats(sums[0]), TrainingHealth._stats(sums[1])
    assert not health.collapsed(stuck, step=50)  # too early to tell
    assert health.collapsed(stuck, step=100)
    assert not health.collapsed(learning, step=100)
    message = health.check(stuck, 120, "arcface s=64 m=0.5")
    assert "collapse plateau" in message and "36.40" in message and "head.params.s" in message
    assert health.check(stuck, 130, "arcface s=64 m=0.5") is None  # once per run
    line = health_line(3, learning, 36.4, {"val eval acc %": 91.25})
    assert line.startswith("health epoch 3: train acc 62.5%") and "val eval acc % 91.25" in line


def _tiny_run(tmp_path, s: float, name: str):
    return config_from_dict({
        "name": name, "output_dir": str(tmp_path), "batch_size": 32, "epochs": 3.0, "device": "cpu",
        "log_every": 5, "checkpoint_every": 100_000, "tensorboard": False, "deterministic": True,
        "data": {"kind": "synthetic", "path": str(tmp_path / "data"), "num_workers": 0, "synthetic_identities": 40,
                 "synthetic_images_per_identity": 12, "synthetic_eval_identities": 20, "synthetic_pairs": 200},
        "model": {"arch": "iresnet_tiny", "embedding_size": 64},
        "head": {"name": "arcface", "params": {"s": s, "m": 0.5}},
        "optim": {"lr": 0.1, "milestones": [], "warmup_epochs": 0.5},
        "health": {"collapse_after_epochs": 1.5},
    })


@pytest.mark.slow
def test_collapsing_run_warns_and_converging_run_does_not(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cdface.train")
    collapsing = fit(_tiny_run(tmp_path, 64.0, "s64"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "plateau" in r.getMessage()]
    assert len(warnings) == 1, warnings
    caplog.clear()
    converging = fit(_tiny_run(tmp_path, 16.0, "s16"))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING and "plateau" in r.getMessage()]
    # the logged health says why: train-batch accuracy and target cosine, and one line per epoch
    last = {name: [r for r in run.history if "train_accuracy" in r][-1] for name, run in
            (("s64", collapsing), ("s16", converging))}
    assert last["s16"]["target_cosine"] > last["s64"]["target_cosine"] + 0.1
    assert last["s16"]["train_accuracy"] > last["s64"]["train_accuracy"]
    assert len(converging.health) == 3 and converging.health[0].startswith("health epoch 1: train acc")
    assert (tmp_path / "s16" / "health.txt").read_text().splitlines() == converging.health
