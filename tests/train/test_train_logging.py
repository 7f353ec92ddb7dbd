"""What a user sees of a run: the start summary, the TensorBoard notice, training.png, ETA and history on resume."""

from __future__ import annotations

import builtins
import json
import logging

import pytest

from cdface.config import config_from_dict
from cdface.train import metrics_log
from cdface.train.metrics_log import MetricsLog
from cdface.train.run_folder import write_run_config
from cdface.train.trainer import fit


def _cfg(tmp_path, **extra):
    values = {
        "name": "run", "output_dir": str(tmp_path), "batch_size": 16, "epochs": 2.0, "device": "cpu",
        "log_every": 2, "checkpoint_every": 3, "tensorboard": False, "deterministic": True,
        "data": {"kind": "synthetic", "path": str(tmp_path / "data"), "num_workers": 0, "synthetic_identities": 8,
                 "synthetic_images_per_identity": 4, "synthetic_eval_identities": 20, "synthetic_pairs": 20},
        "model": {"arch": "iresnet_tiny", "embedding_size": 32},
        "head": {"name": "arcface", "params": {"s": 16.0, "m": 0.5}},
        "optim": {"lr": 0.05, "milestones": []},
    }
    values.update(extra)
    return config_from_dict(values)


def test_start_summary_curves_and_a_resume_that_rewrites_history(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cdface.train")
    first = fit(_cfg(tmp_path, max_steps=3))
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("start\n"))
    for needle in (str(tmp_path / "run"), "iresnet_tiny", "M parameters", "32 images, 8 classes", "arcface",
                   "batch 16 (global), 2 steps/epoch, 3 steps", "checkpoints", "from scratch"):
        assert needle in summary, needle
    assert (tmp_path / "run" / "training.png").stat().st_size > 0  # drawn at the end of the run
    # a stale record after the checkpoint (as a run killed after logging step 4 leaves), then a resume
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "ce_loss": 1.0}) + "\n")
    caplog.clear()
    fit(_cfg(tmp_path, max_steps=4, resume="auto"))
    assert any("resumed from" in r.getMessage() and "at step 3" in r.getMessage() for r in caplog.records)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "ce_loss" in r]
    assert len(train_steps) == len(set(train_steps)), train_steps  # no step logged twice
    assert first.step == 3 and max(train_steps) == 4


def test_eta_counts_this_process_steps_only(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="cdface.train")
    clock = iter([100.0, 110.0])  # constructed at t=100; the record at t=110: 5 steps in 10 s
    monkeypatch.setattr(metrics_log.time, "perf_counter", lambda: next(clock))
    log = MetricsLog(tmp_path, tensorboard=False, start_step=35)
    log.log({"step": 40, "epoch": 1.0, "ce_loss": 1.0, "cd_loss": 0.0, "lr": 0.1, "samples_per_s": 1.0}, 50)
    log.close()
    # 10 steps left at 2 s a step: 0.3 min (counting the resumed 35 steps would say 0.1)
    assert any("eta 0.3 min" in r.getMessage() for r in caplog.records)


def test_missing_tensorboard_is_said_once(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="cdface.train")
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    MetricsLog(tmp_path, tensorboard=True).close()
    notes = [r.getMessage() for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert len(notes) == 1 and "pip install" in notes[0] and "tensorboard: false" in notes[0]


@pytest.mark.parametrize("stale", ['{"step": 9}', '{"step": 9, "ce_loss"'])
def test_history_after_the_resumed_step_is_dropped(tmp_path, stale):
    """In one place, once the run has started (write_run_config); the metrics log then only appends."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2}\n{"step": 4}\n' + stale + "\n")
    write_run_config(_cfg(tmp_path, resume="auto"), tmp_path, 4)
    assert path.read_text() == '{"step": 2}\n{"step": 4}\n'
    log = MetricsLog(tmp_path, tensorboard=False, start_step=4)
    log.log({"step": 5})
    log.close()
    assert path.read_text() == '{"step": 2}\n{"step": 4}\n{"step": 5}\n'
    write_run_config(_cfg(tmp_path, resume="auto"), tmp_path, 0)  # resume=auto that found no checkpoint
    assert path.read_text() == ""


def test_train_help_lists_keys_configs_and_resume_and_show_config_resolves(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "configs"
    help_text = subprocess.run([sys.executable, "-m", "cdface", "train", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for needle in ("resume=auto", "init_from", "synthetic_arcface", "ms1mv2_ir100_cd", "cd.:", "optim.:", "lr",
                   "--show-config"):
        assert needle in help_text, needle
    shown = subprocess.run([sys.executable, "-m", "cdface", "train", str(configs / "synthetic_cd.yaml"),
                            "optim.lr=0.005", "--show-config"], capture_output=True, text=True, check=True).stdout
    import yaml

    resolved = yaml.safe_load(shown)
    assert resolved["optim"]["lr"] == 0.005 and resolved["method"] == "cd"  # the override and the file
    assert resolved["head"]["params"]["s"] == 16.0  # from the base: chain (synthetic_arcface.yaml)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("order", ["option_first", "option_between"])
def test_show_config_may_stand_before_or_between_the_overrides(order, capsys):
    from pathlib import Path

    import yaml

    from cdface.cli import main

    config = str(Path(__file__).resolve().parents[2] / "configs" / "synthetic_cd.yaml")
    argv = {"option_first": ["train", config, "--show-config", "optim.lr=0.005", "cd.interval=7"],
            "option_between": ["train", config, "optim.lr=0.005", "--show-config", "cd.interval=7"]}[order]
    assert main(argv) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["optim"]["lr"] == 0.005 and resolved["cd"]["interval"] == 7


def test_an_unknown_option_among_the_overrides_is_still_refused(capsys):
    from pathlib import Path

    from cdface.cli import main

    config = str(Path(__file__).resolve().parents[2] / "configs" / "synthetic_cd.yaml")
    with pytest.raises(SystemExit) as exc:
        main(["train", config, "--show-config", "optim.lr=0.005", "--shw-config"])
    assert exc.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
