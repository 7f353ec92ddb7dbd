"""Which data a run belongs to (the data fingerprint), the resume policy, and the run's bookkeeping."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from train_helpers import tiny_run_config

from cdface.config import TrainConfig, config_from_dict
from cdface.data.datasets import ImageFolderDataset, RecordIODataset
from cdface.data.extract import extract_recordio
from cdface.data.fingerprint import DataFingerprint, labels_digest
from cdface.errors import ConfigError
from cdface.models import create_model
from cdface.train import checkpoint as ckpt
from cdface.train.health import truncate_health
from cdface.train.model_options import check_local_batch
from cdface.train.resume_policy import check_resume_config
from cdface.train.run_folder import write_run_config
from cdface.train.schedule import schedule_notes
from cdface.train.trainer import fit

REPO = Path(__file__).resolve().parents[2]


_cfg = tiny_run_config


@pytest.fixture(scope="module")
def face_folder(tiny_face_set, tmp_path_factory) -> Path:
    """The tiny set as an image folder (12 identities of 8 images: equal class sizes)."""
    root = tmp_path_factory.mktemp("folder") / "faces"
    extract_recordio(tiny_face_set["rec"], root)
    return root


# ---- the fingerprint ---------------------------------------------------------------------------------------


def test_a_renamed_identity_folder_changes_the_fingerprint_a_moved_set_does_not(face_folder, tmp_path):
    original = ImageFolderDataset(face_folder).fingerprint
    moved = tmp_path / "elsewhere" / "faces"
    shutil.copytree(face_folder, moved)
    assert ImageFolderDataset(moved).fingerprint == original
    # equal class sizes: the label array is the same after the rename, but every index past the first class
    # now points at another identity's images
    first = sorted(p.name for p in moved.iterdir())[0]
    (moved / first).rename(moved / "zz_renamed")
    renamed = ImageFolderDataset(moved)
    assert np.array_equal(renamed.labels, ImageFolderDataset(face_folder).labels)
    assert renamed.fingerprint != original
    (difference,) = original.differences(renamed.fingerprint)
    assert "same size (96 samples, 12 classes) but other labels or samples" in difference


def test_fingerprint_differences_name_what_differs():
    a = DataFingerprint(100, 10, labels_digest(np.arange(100) % 10))
    b = DataFingerprint(90, 9, labels_digest(np.arange(90) % 9))
    assert a.differences(a) == []
    assert a.differences(b) == ["100 samples there, 90 here", "10 classes there, 9 here"]
    assert DataFingerprint.from_dict(a.as_dict()) == a
    assert DataFingerprint.from_dict(None) is None and DataFingerprint.from_dict({"num_samples": 1}) is None
    # the hash is of the labels in sample order, not of their multiset
    assert labels_digest(np.array([0, 1, 1])) != labels_digest(np.array([1, 0, 1]))


def test_the_label_cache_keeps_the_fingerprint_so_it_is_hashed_once(tiny_face_set, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = RecordIODataset(tiny_face_set["rec"], cache_dir=cache)
    with np.load(next(cache.glob("*.npz"))) as z:
        assert str(z["labels_sha256"]) == first.fingerprint.labels_sha256

    def no_hashing(*_args, **_kwargs):
        raise AssertionError("hashed again despite the cache")

    monkeypatch.setattr("cdface.data.datasets.labels_digest", no_hashing)
    assert RecordIODataset(tiny_face_set["rec"], cache_dir=cache).fingerprint == first.fingerprint


@pytest.fixture(scope="module")
def folder_run(face_folder, tmp_path_factory):
    """Stage 1 on the image folder, stopped after step 4 (a checkpoint at 2 and 4 of 6)."""
    root = tmp_path_factory.mktemp("folder_run")
    values = _cfg(root, {"kind": "folder", "path": str(face_folder)})

    def crash(step, loss):
        if step == 4:
            raise KeyboardInterrupt("simulated crash")
        return loss

    with pytest.raises(KeyboardInterrupt):
        fit(config_from_dict(values), fault_hook=crash)
    return root, values


def _copy_run(folder_run, tmp_path: Path) -> tuple[Path, dict]:
    root, values = folder_run
    shutil.copytree(root / "runs", tmp_path / "runs")
    return tmp_path, {**values, "output_dir": str(tmp_path / "runs"), "resume": "auto"}


def test_every_checkpoint_stores_the_data_fingerprint(folder_run, face_folder):
    root, _ = folder_run
    state = ckpt.load_checkpoint(ckpt.latest_valid_checkpoint(root / "runs" / "run" / "checkpoints"))
    assert DataFingerprint.from_dict(state["data_fingerprint"]) == ImageFolderDataset(face_folder).fingerprint


def test_a_moved_set_resumes(folder_run, face_folder, tmp_path, caplog):
    _, values = _copy_run(folder_run, tmp_path)
    moved = tmp_path / "moved" / "faces"
    shutil.copytree(face_folder, moved)
    values["data"] = {**values["data"], "path": str(moved)}
    with caplog.at_level(logging.INFO, logger="cdface.train"):
        result = fit(config_from_dict(values))
    assert result.step == 6
    assert f"data.path {str(face_folder)!r} → {str(moved)!r} from step" in caplog.text


def test_resuming_on_a_renamed_identity_is_refused_naming_what_differs(folder_run, face_folder, tmp_path):
    _, values = _copy_run(folder_run, tmp_path)
    renamed = tmp_path / "renamed" / "faces"
    shutil.copytree(face_folder, renamed)
    (renamed / "00").rename(renamed / "zz")  # the same folder, one identity renamed: every label shifts
    values["data"] = {**values["data"], "path": str(renamed)}
    with pytest.raises(ckpt.CheckpointError, match=r"belongs to another training set than data.path .*renamed/faces: "
                       r"same size \(96 samples, 12 classes\) but other labels or samples"):
        fit(config_from_dict(values))


def test_stage_2_on_another_set_of_the_same_size_is_refused(folder_run, face_folder, tmp_path):
    root, values = folder_run
    renamed = tmp_path / "renamed" / "faces"
    shutil.copytree(face_folder, renamed)
    (renamed / "00").rename(renamed / "zz")
    stage2 = {**values, "name": "cd", "method": "cd", "init_from": str(root / "runs" / "run"),
              "data": {**values["data"], "path": str(renamed)}}
    with pytest.raises(ckpt.CheckpointError, match=r"other labels or samples.*finetune.backbone_only=true"):
        fit(config_from_dict(stage2))
    assert not (root / "runs" / "cd").exists()  # refused before the run folder was used


# ---- the resume policy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, new, rule",
    [("cd.wd", 0.5, "apply"), ("cd.wc", 0.25, "apply"), ("cd.s", 16.0, "apply"), ("cd.num_negatives", 7, "apply"),
     ("cd.per_class_centres", True, "apply"), ("data.cache_dir", "/elsewhere", "apply"),
     ("cd.num_easy", 2, "refuse"), ("cd.interval", 3, "refuse"), ("cd.percentile", 0.3, "refuse"),
     ("data.kind", "folder", "refuse"), ("finetune.backbone_lr_scale", 0.1, "refuse")],
)
def test_resume_refuses_only_what_changes_the_drawn_samples_or_the_data(key, new, rule, caplog):
    saved = config_from_dict({"method": "cd"})
    section, leaf = key.split(".")
    changed = config_from_dict({"method": "cd", section: {leaf: new}})
    from cdface.config import config_to_dict

    if rule == "refuse":
        with pytest.raises(ConfigError, match=f"{key}: cannot change"):
            check_resume_config(config_to_dict(saved), changed, "ckpt.pt", 10)
        return
    with caplog.at_level(logging.INFO, logger="cdface.train"):
        check_resume_config(config_to_dict(saved), changed, "ckpt.pt", 10)
    assert f"{key} " in caplog.text and "from step 10" in caplog.text


def test_a_new_data_path_needs_a_fingerprint_to_compare():
    from cdface.config import config_to_dict

    saved = config_to_dict(config_from_dict({"data": {"path": "/old/set"}}))
    moved = config_from_dict({"data": {"path": "/new/set"}})
    check_resume_config(saved, moved, "ckpt.pt", 3, fingerprint_checked=True)
    with pytest.raises(ConfigError, match="data.path: cannot change .*no data fingerprint"):
        check_resume_config(saved, moved, "ckpt.pt", 3, fingerprint_checked=False)


# ---- bookkeeping ------------------------------------------------------------------------------------------


def test_overwrite_clears_health_txt_and_a_resume_cuts_it_back(tmp_path):
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    lines = [f"health epoch {e}: train acc {e}0.0%" for e in (1, 2, 3)]
    (run_dir / "health.txt").write_text("\n".join(lines) + "\n")
    write_run_config(TrainConfig(resume="auto"), run_dir, resumed_step=25, steps_per_epoch=10)
    assert (run_dir / "health.txt").read_text().splitlines() == lines[:2]  # epoch 3 ends at step 30 > 25
    write_run_config(TrainConfig(overwrite=True), run_dir)
    assert not (run_dir / "health.txt").exists()
    truncate_health(run_dir / "absent.txt", 1)  # nothing to cut: no error, nothing written
    assert not (run_dir / "absent.txt").exists()


def test_max_steps_sets_the_length_and_late_milestones_are_flagged(tiny_face_set, tmp_path, caplog):
    # 96 images / 16 = 6 steps an epoch: epochs=1 alone would stop at step 6
    values = _cfg(tmp_path, {"kind": "recordio", "path": str(tiny_face_set["rec"])}, max_steps=8,
                  checkpoint_every=100, optim={"scheduler": "step", "milestones": [0.5, 3.0]})
    with caplog.at_level(logging.INFO, logger="cdface.train"):
        result = fit(config_from_dict(values))
    assert result.step == 8
    assert "max_steps=8 sets the length: 8 steps = 1.33 epochs, where epochs=1 alone gives 6 steps" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    flagged = [message for message in warnings if "milestones" in message]
    assert len(flagged) == 1 and flagged[0].startswith("optim.milestones 3 (epochs) are at or past the end")


def test_schedule_notes():
    from cdface.config import OptimConfig

    assert schedule_notes(OptimConfig(milestones=[1.0, 2.0]), 10, 30) == []
    (note,) = schedule_notes(OptimConfig(milestones=[1.0, 3.0, 4.0]), 10, 30)
    assert note.startswith("optim.milestones 3, 4 (epochs)")
    assert schedule_notes(OptimConfig(scheduler="cosine", milestones=[9.0]), 10, 30) == []
    (warm,) = schedule_notes(OptimConfig(scheduler="cosine", warmup_epochs=3.0), 10, 30)
    assert "lasts the whole run" in warm


def test_one_sample_per_process_is_refused_before_the_run_folder_is_used(tiny_face_set, tmp_path):
    values = _cfg(tmp_path, {"kind": "recordio", "path": str(tiny_face_set["rec"])}, batch_size=1)
    for _ in range(2):  # the same command again gets the same answer, not "the run folder already holds a run"
        with pytest.raises(ConfigError, match=r"^batch_size: batch_size 1 gives each process 1 sample per step"):
            fit(config_from_dict(values))
    assert not (tmp_path / "runs" / "run").exists() or not any((tmp_path / "runs" / "run").iterdir())
    backbone = create_model("iresnet_tiny", embedding_size=8)
    with pytest.raises(ConfigError, match="batch_size 2 over 2 processes gives each process 1 sample"):
        check_local_batch(backbone, 1, 2)
    check_local_batch(backbone, 1, 2, freeze_bn=True)  # running statistics: one sample is fine
    check_local_batch(backbone, 2, 2)


def test_sigterm_ends_a_run_with_the_one_line_message_ctrl_c_gets(tiny_face_set, tmp_path):
    values = _cfg(tmp_path, {"kind": "recordio", "path": str(tiny_face_set["rec"])}, name="cli", epochs=20.0,
                  checkpoint_every=1)
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump(values))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cdface", "train", str(config), "seed=0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt_dir = tmp_path / "runs" / "cli" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and ckpt.latest_valid_checkpoint(ckpt_dir) is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"  # 120 steps: it cannot finish
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    newest = ckpt.latest_valid_checkpoint(ckpt_dir)
    assert last == (f"terminated (SIGTERM); newest checkpoint {newest}; "
                    f"continue with: cdface train {config} seed=0 resume=auto")
