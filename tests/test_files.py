"""cdface.files: the one weights-only torch.load and the one atomic writer, and that every writer uses it."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cdface.errors import FormatError, UnsafeFileError
from cdface.files import atomic_write, atomic_writer, load_weights, sha256_file


@pytest.fixture
def disk_log(monkeypatch):
    """Records ("fsync", what) and ("replace", target) in call order; `what` is "dir" or the file's name."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else "?"
        events.append(("fsync", "dir" if os.path.isdir(target) else Path(target).name))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_atomic_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, disk_log):
    target = tmp_path / "model.json"
    target.write_text("old")
    atomic_write(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    kinds = [kind for kind, _ in disk_log]
    assert kinds == ["fsync", "replace", "fsync"]
    assert disk_log[0][1].startswith("model.json.") and disk_log[0][1].endswith(".tmp")  # the temporary file
    assert disk_log[1] == ("replace", "model.json") and disk_log[2] == ("fsync", "dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "backbone.pt"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="disk gone"), atomic_writer(target) as handle:
        handle.write(b"half of it")
        raise RuntimeError("disk gone")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["backbone.pt"]


def test_written_files_keep_the_umask_permissions(tmp_path):
    atomic_write(tmp_path / "a.txt", "x")
    (tmp_path / "b.txt").write_text("x")
    assert (tmp_path / "a.txt").stat().st_mode == (tmp_path / "b.txt").stat().st_mode


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def test_load_weights_refuses_code_names_the_file_and_reads_tensors(tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": _Payload()}))
    with pytest.raises(UnsafeFileError, match=r"evil\.pt: refused"):
        load_weights(evil)
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3.0)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(FormatError, match=r"truncated\.pt: a state_dict \("):
        load_weights(truncated, "a state_dict")
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "missing.pt")
    assert torch.equal(load_weights(good)["w"], torch.arange(3.0))
    assert len(sha256_file(good)) == 64


def _export_backbone(run_dir: Path) -> None:
    from cdface.config import TrainConfig
    from cdface.models import create_model
    from cdface.train.export import export_backbone

    cfg = TrainConfig()
    cfg.model.arch = "iresnet_tiny"
    cfg.model.embedding_size = 8
    export_backbone(create_model("iresnet_tiny", embedding_size=8), cfg, run_dir, num_classes=3, step=1)


def _report(out: Path) -> None:
    from cdface.eval.report import write_outputs

    write_outputs(out, {"models": []}, [], plots=False)


def _sharded_head_state(out: Path) -> None:
    from cdface.parallel.checkpoint import write_full_state

    write_full_state(out / "head.pt", {"weight": torch.zeros(2, 2)})


def _model_card(out: Path) -> None:
    from cdface.inference.input_config import write_model_json

    write_model_json(out / "model.json", {"input_size": (112, 112)}, arch="x")


def _checkpoint(out: Path) -> None:
    from cdface.train.checkpoint import save_checkpoint

    save_checkpoint({"step": 1, "w": torch.zeros(2)}, out, 1)


def _pair_set(out: Path) -> None:
    from cdface.data.pairs_bin import write_bin

    write_bin(out / "x.bin", [b"a", b"b"], np.array([True]))


def test_a_corrupt_checkpoint_is_a_format_error_not_an_unsafe_pickle(tmp_path):
    """A torch.save zip whose pickle is damaged (here: APPEND on a tuple) builds nothing unsafe: it is reported
    as unreadable with the unpickler's reason, not as code to refuse with 're-save it as a state_dict'."""
    import zipfile

    good = tmp_path / "good.pt"
    torch.save({"w": 1}, good)
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as out:
        for name in src.namelist():
            out.writestr(name, b"\x80\x02)K\x01a." if name.endswith("data.pkl") else src.read(name))
    with pytest.raises(FormatError, match=r"bad\.pt: a checkpoint \(corrupt: Can only append to lists") as info:
        load_weights(bad, "a checkpoint")
    assert not isinstance(info.value, UnsafeFileError)


@pytest.mark.parametrize(
    ("writer", "files"),
    [(_export_backbone, 2), (_report, 2), (_sharded_head_state, 1), (_model_card, 1), (_checkpoint, 2),
     (_pair_set, 1)],
    ids=["backbone.pt+model.json", "results.json+md", "sharded-head", "model-card", "checkpoint+sidecar",
         "pairs-bin"],
)
def test_every_writer_goes_through_the_atomic_writer(tmp_path, disk_log, writer, files):
    """Each file is fsynced, renamed into place, and its folder fsynced: the writer is `atomic_write`."""
    writer(tmp_path)
    renamed = [name for kind, name in disk_log if kind == "replace"]
    assert len(renamed) == files
    for name in renamed:
        i = disk_log.index(("replace", name))
        assert disk_log[i - 1][0] == "fsync" and disk_log[i - 1][1].startswith(name + ".")  # its temp, synced
        assert disk_log[i + 1] == ("fsync", "dir")
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_atomic_write_onto_a_folder_is_a_format_error_naming_it_and_leaves_nothing(tmp_path):
    (tmp_path / "out.npz").mkdir()
    with pytest.raises(FormatError, match=r"out\.npz: a file to write, but it is a folder"):
        atomic_write(tmp_path / "out.npz", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]
