import os
import pickle

import pytest
import torch

from cdface.errors import UnsafeFileError
from cdface.train import checkpoint as ckpt


def _state(value: float) -> dict:
    return {"w": torch.full((3,), value), "step": int(value)}


def test_save_load_and_prune(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(_state(step), tmp_path, step, keep=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["ckpt_00000003.pt", "ckpt_00000004.pt"]
    latest = ckpt.latest_valid_checkpoint(tmp_path)
    assert latest.name == "ckpt_00000004.pt"
    assert torch.equal(ckpt.load_checkpoint(latest)["w"], torch.full((3,), 4.0))


def test_truncated_or_unsigned_checkpoints_are_skipped(tmp_path):
    ckpt.save_checkpoint(_state(1), tmp_path, 1, keep=0)
    good = ckpt.save_checkpoint(_state(2), tmp_path, 2, keep=0)
    # A kill during the write of step 3: the data file is there, its checksum sidecar is not.
    (tmp_path / "ckpt_00000003.pt").write_bytes(good.read_bytes()[:50])
    # A later one whose bytes were cut after its sidecar was written.
    later = ckpt.save_checkpoint(_state(4), tmp_path, 4, keep=0)
    later.write_bytes(later.read_bytes()[:-7])
    assert ckpt.latest_valid_checkpoint(tmp_path) == good
    with pytest.raises(ckpt.CheckpointError, match="checksum"):
        ckpt.load_checkpoint(later)


def test_a_damaged_sidecar_is_skipped_like_a_mismatched_one(tmp_path):
    # bytes that are not text in a .sha256 (a disk fault): UnicodeDecodeError, a traceback from resume=auto,
    # init_from=RUN and cdface eval --model RUN
    good = ckpt.save_checkpoint(_state(1), tmp_path, 1, keep=0)
    bad = ckpt.save_checkpoint(_state(2), tmp_path, 2, keep=0)
    bad.with_name(bad.name + ".sha256").write_bytes(b"\xff\xfe\x00garbage")
    assert ckpt.latest_valid_checkpoint(tmp_path) == good
    with pytest.raises(ckpt.CheckpointError, match="checksum"):
        ckpt.load_checkpoint(bad)


def test_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"backbone": Payload()}, fh)
    with pytest.raises(UnsafeFileError, match="refused"):
        ckpt.load_checkpoint(path)
    assert not marker.exists()


def test_out_of_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    first = ckpt.save_checkpoint(_state(1), tmp_path, 1)
    real_write = ckpt.atomic_write

    def full_disk(path, data):
        if path.name.endswith(".pt"):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data[: len(data) // 2])
            tmp.unlink()
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(ckpt, "atomic_write", full_disk)
    with pytest.raises(ckpt.CheckpointError, match="previous checkpoint .*ckpt_00000001.pt is intact"):
        ckpt.save_checkpoint(_state(2), tmp_path, 2)
    assert ckpt.latest_valid_checkpoint(tmp_path) == first
    assert not (tmp_path / "ckpt_00000002.pt").exists()


def test_pruning_keeps_the_checkpoint_just_written_and_older_history_is_set_aside(tmp_path):
    for step in (6, 9, 12):
        ckpt.save_checkpoint(_state(step), tmp_path, step, keep=2)
    # resuming from step 6 starts a new history: the later checkpoints move aside ...
    aside = ckpt.set_aside_newer(tmp_path, 6)
    assert sorted(p.name for p in aside.iterdir()) == [
        "ckpt_00000009.pt", "ckpt_00000009.pt.sha256", "ckpt_00000012.pt", "ckpt_00000012.pt.sha256"]
    # ... and what the new history writes is kept and found by resume: auto
    written = ckpt.save_checkpoint(_state(8), tmp_path, 8, keep=1)
    assert written.exists() and ckpt.latest_valid_checkpoint(tmp_path) == written
    # pruning never deletes a checkpoint newer than the one just written
    ckpt.save_checkpoint(_state(20), tmp_path, 20, keep=0)
    ckpt.save_checkpoint(_state(10), tmp_path, 10, keep=1)
    assert (tmp_path / "ckpt_00000010.pt").exists() and (tmp_path / "ckpt_00000020.pt").exists()
    assert not (tmp_path / "ckpt_00000008.pt").exists()
