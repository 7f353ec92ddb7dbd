"""End-to-end training on a tiny synthetic set: both stages, resumption, fault handling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import tiny_run_config

from cdface.config import config_from_dict, deep_merge
from cdface.files import load_weights
from cdface.train import checkpoint as ckpt
from cdface.train.trainer import TrainingStopped, fit

REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, face_set: dict, name: str, **overrides) -> dict:
    """tiny_run_config on the face set: two epochs, a step schedule (lr x0.1 at epoch 1), few logs and
    checkpoints, and a small CD setting for stage-2 tests."""
    data = {"kind": "recordio", "path": str(face_set["rec"])}
    local = {
        "epochs": 2.0, "log_every": 2, "checkpoint_every": 1000,
        "optim": {"scheduler": "step", "milestones": [1.0]},
        "cd": {"num_classes": 2, "num_easy": 3, "num_hard": 1, "num_negatives": 4, "interval": 2},
    }
    return deep_merge(deep_merge(tiny_run_config(tmp_path, data, name), local), overrides)


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def _crash_then_resume(cfg: dict, crash_at: int):
    """Run `cfg` until a simulated crash at step `crash_at`, then resume=auto to the end; the resumed result."""

    def crash(step, loss):
        if step == crash_at:
            raise KeyboardInterrupt("simulated crash")
        return loss

    with pytest.raises(KeyboardInterrupt):
        fit(config_from_dict(cfg), fault_hook=crash)
    return fit(config_from_dict({**cfg, "resume": "auto"}))


@pytest.fixture(scope="module")
def stage1(tiny_face_set, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage1")
    result = fit(config_from_dict(_cfg(tmp, tiny_face_set, "stage1", epochs=1.0)))
    return result


def test_stage1_writes_checkpoint_backbone_and_card(stage1):
    run = stage1.run_dir
    assert stage1.step == 6  # 96 images / batch 16
    state = ckpt.load_checkpoint(stage1.checkpoint)
    assert {"backbone", "head", "scores", "optimizer", "sampler", "rng", "config", "step"} <= state.keys()
    assert state["scores"]["scores"].shape[0] == 96
    backbone = torch.load(run / "backbone.pt", weights_only=True)
    assert backbone.keys() == stage1.backbone.state_dict().keys()
    card = yaml.safe_load((run / "model.json").read_text())
    assert card["arch"] == "iresnet_tiny" and card["color"] == "RGB" and card["mean"] == [0.5, 0.5, 0.5]
    losses = [r["ce_loss"] for r in stage1.history if "ce_loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_stage2_cd_runs_from_stage1_and_changes_scores(stage1, tiny_face_set, tmp_path):
    before = ckpt.load_checkpoint(stage1.checkpoint)["scores"]["scores"].clone()
    cfg = _cfg(tmp_path, tiny_face_set, "cd", method="cd", init_from=str(stage1.run_dir), epochs=1.0, log_every=1)
    result = fit(config_from_dict(cfg))
    cd_losses = [r["cd_loss"] for r in result.history if r.get("cd_loss")]
    assert cd_losses and all(v > 0 for v in cd_losses)
    after = ckpt.load_checkpoint(result.checkpoint)["scores"]["scores"]
    assert not torch.equal(before, after)


def test_init_from_a_compiled_ddp_checkpoint_loads(stage1, tiny_face_set, tmp_path):
    """Backbone keys saved from a compiled model (`_orig_mod.`) and a head saved under DDP (`module.`) are
    stripped as `cdface eval` strips them; the run starts from those very weights."""
    state = ckpt.load_checkpoint(stage1.checkpoint)
    state["backbone"] = {f"_orig_mod.{k}": v for k, v in state["backbone"].items()}
    state["head"] = {f"module.{k}": v for k, v in state["head"].items()}
    ckpt.save_checkpoint(state, tmp_path / "compiled" / "checkpoints", int(state["step"]))
    cfg = _cfg(tmp_path, tiny_face_set, "from_compiled", method="cd", init_from=str(tmp_path / "compiled"),
               max_steps=1)
    replicated = fit(config_from_dict(cfg))
    assert replicated.step == 1  # before: FormatError, 'unexpected key(s): _orig_mod.conv1...'
    # the sharded head takes the same file (it read state["head"]["core.weight"]: KeyError, a traceback) and,
    # in one process, trains the same step
    sharded = fit(config_from_dict({**cfg, "name": "from_compiled_sharded", "head": {"sharded": True}}))
    torch.testing.assert_close(sharded.head.weight, replicated.head.core.weight)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_bitwise_equal_to_uninterrupted(stage1, tiny_face_set, tmp_path, workers):
    common = {"method": "cd", "init_from": str(stage1.run_dir), "data": {"num_workers": workers}}
    straight = fit(config_from_dict(_cfg(tmp_path, tiny_face_set, "straight", **common)))

    cfg = _cfg(tmp_path, tiny_face_set, "interrupted", checkpoint_every=3, **common)
    resumed = _crash_then_resume(cfg, crash_at=7)
    assert resumed.step == straight.step == 12
    _assert_bitwise_equal(_weights(straight.backbone), _weights(resumed.backbone))
    _assert_bitwise_equal(_weights(straight.head), _weights(resumed.head))
    a = ckpt.load_checkpoint(straight.checkpoint)["scores"]["scores"]
    b = ckpt.load_checkpoint(resumed.checkpoint)["scores"]["scores"]
    assert torch.equal(a, b)


def _all_checkpoints_finite(ckpt_dir: Path) -> list[str]:
    names = []
    for path in ckpt.list_checkpoints(ckpt_dir):
        assert ckpt.is_valid(path)
        assert ckpt.nonfinite_entries(ckpt.load_checkpoint(path)) == [], path.name
        names.append(path.name)
    return names


def test_nan_losses_and_nan_weights_stop_the_run_naming_a_finite_checkpoint(tiny_face_set, tmp_path):
    def poison(step, loss):
        if step == 1:
            return loss * float("nan")  # a non-finite loss: the step is skipped, the weights stay finite
        if step == 4:
            # a finite loss whose gradient is NaN (d sqrt(u)/du = inf at u = 0, times du = 0): the update
            # makes every weight NaN, and from then on the losses are NaN by themselves
            return loss + torch.sqrt(loss - loss)
        return loss

    cfg = _cfg(tmp_path, tiny_face_set, "nan", checkpoint_every=3, max_bad_steps=3, epochs=2.0)
    # bad: step 2 (index 1) and steps 5, 6, 7 (indices 4, 5, 6), numbered as metrics.jsonl and ckpt_* number them
    with pytest.raises(TrainingStopped, match="stopped at step 7: 3 bad steps in a row") as info:
        fit(config_from_dict(cfg), fault_hook=poison)
    ckpt_dir = tmp_path / "runs" / "nan" / "checkpoints"
    # the epoch-end save at step 6 would have held the NaN weights of step 4's update: it is not written
    assert _all_checkpoints_finite(ckpt_dir) == ["ckpt_00000003.pt"]
    last_good = ckpt.latest_valid_checkpoint(ckpt_dir)
    assert f"last good checkpoint: {last_good}" in str(info.value)
    # ... and resume=auto continues from it to the end
    resumed = fit(config_from_dict({**cfg, "resume": "auto"}))
    assert resumed.step == 12
    assert all(torch.isfinite(v).all() for v in resumed.backbone.state_dict().values() if v.is_floating_point())


def test_a_diverging_run_never_keeps_non_finite_checkpoints(tiny_face_set, tmp_path):
    """lr 1e6 with a checkpoint every step (the reported case): the weights blow up with a finite loss."""
    cfg = _cfg(tmp_path, tiny_face_set, "diverge", checkpoint_every=1, max_bad_steps=3, keep_checkpoints=3,
               optim={"lr": 1e6, "milestones": []})
    with pytest.raises(TrainingStopped) as info:
        fit(config_from_dict(cfg))
    ckpt_dir = tmp_path / "runs" / "diverge" / "checkpoints"
    kept = _all_checkpoints_finite(ckpt_dir)
    assert kept, "the finite checkpoints before the divergence are kept"
    assert str(ckpt_dir / kept[-1]) in str(info.value)
    # rotation kept the newest finite checkpoint, and resume=auto takes it (a non-finite one would be refused)
    step = int(kept[-1][5:13])
    resumed = fit(config_from_dict({**cfg, "resume": "auto", "max_steps": step}))
    assert resumed.step == step and resumed.checkpoint == ckpt_dir / kept[-1]


def test_kill_minus_nine_then_resume(stage1, tiny_face_set, tmp_path):
    """A real SIGKILL at a random moment after the first checkpoint, then `resume: auto`."""
    common = {"method": "cd", "init_from": str(stage1.run_dir), "epochs": 3.0}
    straight = fit(config_from_dict(_cfg(tmp_path, tiny_face_set, "straight", **common)))

    cfg = _cfg(tmp_path, tiny_face_set, "killed", checkpoint_every=2, **common)
    config_path = tmp_path / "killed.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "cdface", "train", str(config_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_dir = tmp_path / "runs" / "killed" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = ckpt.latest_valid_checkpoint(ckpt_dir)
        if found is not None and int(found.stem.split("_")[1]) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: no kill was tested"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # it died of the kill, not of its own end
    newest = ckpt.latest_valid_checkpoint(ckpt_dir)
    assert newest is not None and ckpt.load_checkpoint(newest)["step"] < 18  # the kill came before the end
    resumed = fit(config_from_dict({**cfg, "resume": "auto"}))
    assert resumed.step == straight.step == 18
    _assert_bitwise_equal(_weights(straight.backbone), _weights(resumed.backbone))


def test_a_skipped_last_step_still_ends_with_a_checkpoint_of_that_step(tiny_face_set, tmp_path):
    def poison_last(step, loss):
        return loss * float("nan") if step == 5 else loss

    result = fit(config_from_dict(_cfg(tmp_path, tiny_face_set, "nan_last", epochs=1.0)), fault_hook=poison_last)
    assert result.step == 6
    latest = ckpt.latest_valid_checkpoint(tmp_path / "runs" / "nan_last" / "checkpoints")
    assert latest.name == "ckpt_00000006.pt" and ckpt.load_checkpoint(latest)["step"] == 6


def test_a_bad_first_step_is_skipped_and_the_run_trains_on(tiny_face_set, tmp_path):
    """Step 0 bad (as fp16's scaler makes its first overflowing steps, at the start of every run and init_from
    stage): fused SGD's first step must not keep uninitialised momentum. The run stopped at step 3 with "3 bad
    steps in a row" (the momentum of the skipped step poisoned the next ones)."""
    def poison_first(step, loss):
        return loss * float("nan") if step == 0 else loss

    result = fit(config_from_dict(_cfg(tmp_path, tiny_face_set, "nan_first", epochs=1.0)), fault_hook=poison_first)
    assert result.step == 6
    assert [r["skipped_steps"] for r in result.history if "skipped_steps" in r] == [1, 1, 1]
    assert all(torch.isfinite(v).all() for v in _weights(result.backbone).values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in _weights(result.head).values() if v.is_floating_point())


def test_a_sharded_head_takes_init_std_as_the_replicated_one(tiny_face_set, tmp_path):
    """head.params.init_std trained the replicated head and was refused with head.sharded ("unknown
    ['init_std']"): the heads are now built in one place."""
    cfg = _cfg(tmp_path, tiny_face_set, "sharded_std", max_steps=1, head={"sharded": True, "params": {"init_std": 0.5}})
    result = fit(config_from_dict(cfg))
    assert 0.4 < float(result.head.weight.std()) < 0.6  # normal(0, 0.5), moved by one step only


def test_each_checkpoint_scans_the_state_for_non_finite_values_once(tiny_face_set, tmp_path, monkeypatch):
    """The trainer scanned the whole state, then save_checkpoint scanned it again (about 8 GB twice on rank 0 at
    WebFace42M scale)."""
    scans = []
    scan = ckpt.nonfinite_entries

    def counting(state, prefix=""):
        if not prefix:  # a whole state, not the scan's own recursion
            scans.append(sorted(state) if isinstance(state, dict) else type(state).__name__)
        return scan(state, prefix)

    monkeypatch.setattr(ckpt, "nonfinite_entries", counting)
    result = fit(config_from_dict(_cfg(tmp_path, tiny_face_set, "scan_once", max_steps=2, checkpoint_every=1)))
    assert result.checkpoint is not None and len(ckpt.list_checkpoints(result.checkpoint.parent)) == 2
    assert len(scans) == 2, scans


def test_partial_fc_resume_continues_the_sampling_stream(tiny_face_set, tmp_path):
    """head.sample_rate < 1: each step samples negative centres from the head's generator; a resumed run must
    draw the same ones (the generator state is in the checkpoint), so it ends bitwise equal."""
    common = {"batch_size": 4, "max_steps": 12, "epochs": 1.0,
              "head": {"name": "cosface", "params": {"s": 64.0, "m": 0.4}, "sharded": True, "sample_rate": 0.5}}
    straight = fit(config_from_dict(_cfg(tmp_path, tiny_face_set, "pfc_straight", **common)))

    cfg = _cfg(tmp_path, tiny_face_set, "pfc_interrupted", checkpoint_every=3, **common)
    resumed = _crash_then_resume(cfg, crash_at=7)
    assert resumed.step == straight.step == 12
    _assert_bitwise_equal(_weights(straight.backbone), _weights(resumed.backbone))
    _assert_bitwise_equal(_weights(straight.head), _weights(resumed.head))


def test_gradient_accumulation_cd_run_counts_optimizer_steps_and_resumes_bitwise(stage1, tiny_face_set, tmp_path):
    """grad_accum 2 in stage 2: steps/epoch halve, samples are counted per optimizer step, and a crash plus
    resume=auto ends bitwise equal to an uninterrupted run (the sampler's drawn-ahead micro-batches replay)."""
    common = {"method": "cd", "init_from": str(stage1.run_dir), "epochs": 2.0, "batch_size": 8, "grad_accum": 2}
    straight = fit(config_from_dict(_cfg(tmp_path, tiny_face_set, "accum_straight", **common)))
    plain = fit(config_from_dict(_cfg(tmp_path, tiny_face_set, "accum_none", **{**common, "grad_accum": 1})))
    assert straight.step * 2 == plain.step  # an optimizer step takes two micro-batches of 8
    assert any(r.get("cd_closeness") is not None for r in straight.history)  # the CD branch ran

    cfg = _cfg(tmp_path, tiny_face_set, "accum_interrupted", checkpoint_every=2, **common)
    resumed = _crash_then_resume(cfg, crash_at=5)
    assert resumed.step == straight.step
    _assert_bitwise_equal(_weights(straight.backbone), _weights(resumed.backbone))
    _assert_bitwise_equal(_weights(straight.head), _weights(resumed.head))


def test_a_sharded_run_resumes_with_a_replicated_head_and_its_momentum(tiny_face_set, tmp_path):
    """head.sharded true -> false on resume (applied, says the resume policy): the sharded checkpoint keeps the
    head's momentum in head_sharded, not in the optimizer state; the replicated head must get it back (the fused
    SGD step failed on the missing buffer: TypeError, a traceback). In one process both layouts train the same
    step, so the resumed run ends where a replicated run does."""
    common = {"batch_size": 16, "max_steps": 2, "epochs": 1.0, "checkpoint_every": 1}
    straight = fit(config_from_dict(_cfg(tmp_path, tiny_face_set, "replicated", **common)))
    cfg = _cfg(tmp_path, tiny_face_set, "layout", **{**common, "max_steps": 1, "head": {"sharded": True}})
    fit(config_from_dict(cfg))
    resumed = fit(config_from_dict({**cfg, "max_steps": 2, "head": {"sharded": False}, "resume": "auto"}))
    assert resumed.step == 2
    torch.testing.assert_close(resumed.head.core.weight, straight.head.core.weight)


def test_fp16_on_a_cpu_is_refused_before_anything_is_written(tiny_face_set, tmp_path):
    """torch's GradScaler works on CUDA only: fp16 on a CPU would train without one (underflowing gradients)."""
    from cdface.errors import ConfigError

    with pytest.raises(ConfigError, match="precision: fp16 needs a CUDA device.*bf16"):
        fit(config_from_dict(_cfg(tmp_path, tiny_face_set, "fp16_cpu", precision="fp16")))
    assert not (tmp_path / "runs" / "fp16_cpu").exists()


def test_ctrl_c_during_the_checkpoint_write_leaves_checkpoint_sidecar_and_backbone_whole(
        tiny_face_set, tmp_path, monkeypatch, sigint_raises_keyboardinterrupt):
    """The CI failure this guards: SIGINT inside torch.save broke the zip writer into a RuntimeError traceback."""
    written = []
    real_atomic_write = ckpt.atomic_write

    def interrupting_write(path, payload):
        if not written:
            os.kill(os.getpid(), signal.SIGINT)  # arrives as the checkpoint's bytes are being written
        written.append(path)
        return real_atomic_write(path, payload)

    monkeypatch.setattr(ckpt, "atomic_write", interrupting_write)
    cfg = config_from_dict(_cfg(tmp_path, tiny_face_set, "held", epochs=1.0, checkpoint_every=2))
    with pytest.raises(KeyboardInterrupt):
        fit(cfg)
    ckpt_dir = tmp_path / "runs" / "held" / "checkpoints"
    newest = ckpt.latest_valid_checkpoint(ckpt_dir)
    assert newest == ckpt.checkpoint_path(ckpt_dir, 2)  # the checkpoint being written when Ctrl-C came
    assert len(written) == 2  # the checkpoint and its sha256, then nothing more
    backbone = load_weights(tmp_path / "runs" / "held" / "backbone.pt")
    assert all(torch.isfinite(v).all() for v in backbone.values() if v.is_floating_point())
