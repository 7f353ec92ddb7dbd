"""The trainer on imperfect data: corrupt images are substituted and reported; too many stop the run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cdface.config import config_from_dict
from cdface.data.decode import encode_jpeg
from cdface.data.recordio_writer import write_insightface_rec
from cdface.data.synthetic import make_identities, render_set
from cdface.errors import FormatError
from cdface.train.trainer import fit


@pytest.fixture(scope="module")
def faces():
    images, labels = render_set(make_identities(8, seed=5), 8, seed=5)
    return images, labels


def _write(tmp_path: Path, images, labels, corrupt: set[int]) -> Path:
    def encoded(i: int) -> bytes:
        data = encode_jpeg(images[i])
        return data[: len(data) // 3] + b"\x00" * 16 if i in corrupt else data  # truncated JPEG

    return write_insightface_rec(tmp_path / "data", labels, encoded)["rec"]


def _cfg(tmp_path: Path, rec: Path, max_bad: float) -> dict:
    return {
        "name": "faulty",
        "output_dir": str(tmp_path / "runs"),
        "batch_size": 16,
        "epochs": 1.0,
        "device": "cpu",
        "tensorboard": False,
        "log_every": 2,
        "data": {"kind": "recordio", "path": str(rec), "num_workers": 0, "max_bad_fraction": max_bad},
        "model": {"arch": "iresnet_tiny", "embedding_size": 32},
        "optim": {"lr": 0.05, "milestones": []},
    }


def test_corrupt_images_are_substituted_and_reported(faces, tmp_path, caplog):
    images, labels = faces
    rec = _write(tmp_path, images, labels, corrupt={3, 40})
    with caplog.at_level(logging.WARNING):
        result = fit(config_from_dict(_cfg(tmp_path, rec, max_bad=0.05)))
    assert result.step == 4  # 64 images / batch 16: the epoch completed
    summary = [r.getMessage() for r in caplog.records if "corrupt images substituted" in r.getMessage()]
    assert summary and "2 corrupt of 64" in summary[0]


def test_too_many_corrupt_images_stop_the_run(faces, tmp_path):
    images, labels = faces
    corrupt = set(range(0, 64, 4))  # 25% of the set
    rec = _write(tmp_path, images, labels, corrupt=corrupt)
    with pytest.raises(FormatError, match="corrupt samples") as info:
        fit(config_from_dict(_cfg(tmp_path, rec, max_bad=0.05)))
    assert "train.rec" in str(info.value)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_one_limit_is_the_epochs_fraction_over_all_workers(faces, tmp_path, workers):
    """4 corrupt of 64 (6.25%) against a 5% limit: whatever the worker count, the error is the epoch's count
    over every loaded sample (not a process's own count of distinct bad images over the whole set)."""
    images, labels = faces
    rec = _write(tmp_path, images, labels, corrupt={3, 17, 40, 59})
    cfg = _cfg(tmp_path, rec, max_bad=0.05)
    cfg["data"]["num_workers"] = workers
    with pytest.raises(FormatError, match=r"epoch 0: at most 5\.00% corrupt samples, found 4 of 64"):
        fit(config_from_dict(cfg))


@pytest.mark.parametrize("crash_at", [4, 6])  # the epoch-end checkpoint (step 4), and one mid-epoch (step 6)
def test_a_resumed_run_reports_corrupt_images_as_an_uninterrupted_one(faces, tmp_path, caplog, crash_at):
    images, labels = faces
    rec = _write(tmp_path, images, labels, corrupt={3, 40})

    def reports() -> list[str]:
        return [r.getMessage() for r in caplog.records if "corrupt images substituted" in r.getMessage()]

    values = {**_cfg(tmp_path, rec, max_bad=0.05), "epochs": 2.0, "checkpoint_every": 3}
    with caplog.at_level(logging.WARNING):
        fit(config_from_dict({**values, "name": "straight"}))
    straight = reports()
    assert len(straight) == 2 and "epoch 1: 2 corrupt of 64" in straight[1]
    caplog.clear()

    def crash(step, loss):
        if step == crash_at:
            raise KeyboardInterrupt
        return loss

    with caplog.at_level(logging.WARNING):
        with pytest.raises(KeyboardInterrupt):
            fit(config_from_dict(values), fault_hook=crash)
        fit(config_from_dict({**values, "resume": "auto"}))
    assert reports() == straight
