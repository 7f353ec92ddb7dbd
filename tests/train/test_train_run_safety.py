"""A run folder holds one run; a resume applies or refuses every changed config value; config.yaml is what ran."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from train_helpers import tiny_run_config

from cdface.config import TrainConfig, config_from_dict, config_to_dict, deep_merge
from cdface.errors import ConfigError
from cdface.train import checkpoint as ckpt
from cdface.train.resume_policy import RESUME_POLICY, rule_of
from cdface.train.trainer import fit

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, face_set: dict, name: str = "run", **overrides) -> dict:
    """tiny_run_config on the face set, two epochs."""
    data = {"kind": "recordio", "path": str(face_set["rec"])}
    return deep_merge(tiny_run_config(tmp_path, data, name, epochs=2.0), overrides)


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_new_run_into_a_used_run_folder_is_refused_unless_resumed_or_overwritten(tiny_face_set, tmp_path):
    first = _cfg(tmp_path, tiny_face_set, max_steps=6)
    fit(config_from_dict(first))
    run_dir = tmp_path / "runs" / "run"
    before = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    again = _cfg(tmp_path, tiny_face_set, max_steps=2, optim={"lr": 0.01})
    with pytest.raises(ConfigError, match="run folder .*run already holds a run .*resume=auto.*overwrite=true"):
        fit(config_from_dict(again))
    # the failed start changed nothing: not config.yaml, not the checkpoints, not the log
    assert {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before

    replaced = fit(config_from_dict({**again, "overwrite": True}))
    assert replaced.step == 2
    assert [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")] == ["ckpt_00000002.pt"]
    assert _steps(run_dir) == [1, 2]  # the older run's records are gone, not mixed in
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["lr"] == 0.01


@pytest.mark.parametrize(
    "key, old, new, rule",
    [("batch_size", 16, 8, "refuse"), ("optim.lr", 0.05, 0.01, "apply"), ("precision", "fp32", "bf16", "apply"),
     ("max_steps", 0, 4, "apply")],
)
def test_a_config_changed_between_a_crash_and_the_resume_is_applied_or_refused(
    tiny_face_set, tmp_path, caplog, key, old, new, rule
):
    values = _cfg(tmp_path, tiny_face_set, epochs=1.0)

    def crash(step, loss):
        if step == 3:
            raise KeyboardInterrupt("simulated crash")
        return loss

    with pytest.raises(KeyboardInterrupt):
        fit(config_from_dict(values), fault_hook=crash)
    run_dir = tmp_path / "runs" / "run"
    saved_yaml = (run_dir / "config.yaml").read_text()
    assert ckpt.latest_valid_checkpoint(run_dir / "checkpoints").name == "ckpt_00000002.pt"

    section, _, leaf = key.rpartition(".")
    changed = {**values, "resume": "auto"}
    if section:
        changed[section] = {**changed[section], leaf: new}
    else:
        changed[key] = new
    assert rule_of(key)[0] == rule
    if rule == "refuse":
        with pytest.raises(ConfigError, match=f"{key}: cannot change from {old!r} to {new!r} when resuming"):
            fit(config_from_dict(changed))
        assert (run_dir / "config.yaml").read_text() == saved_yaml  # still the config of the run on disk
        return

    with caplog.at_level(logging.INFO, logger="cdface.train"):
        result = fit(config_from_dict(changed))
    assert f"{key} {old!r} → {new!r} from step 2" in caplog.text
    in_force = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (in_force[section][leaf] if section else in_force[key]) == new
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    after = [r for r in records if r["step"] > 2 and "lr" in r]
    assert result.step == (4 if key == "max_steps" else 6)
    # the crashed run logged step 3 before dying; the resumed run's record of it replaces that one
    assert _steps(run_dir) == list(range(1, result.step + 1))
    if key == "optim.lr":
        assert after and all(r["lr"] == 0.01 for r in after)


def test_every_config_key_has_a_resume_rule_and_the_doc_shows_the_table():
    doc = (ROOT / "docs" / "training.md").read_text()

    def leaves(values: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in values.items():
            if isinstance(value, dict) and key != "params":
                out += leaves(value, f"{prefix}{key}.")
            else:
                out.append(f"{prefix}{key}")
        return out

    for key in leaves(config_to_dict(TrainConfig())):
        rule_of(key)  # KeyError names a key without a rule
    for key, (rule, _why) in RESUME_POLICY.items():
        assert f"| `{key}` | {rule} |" in doc, f"docs/training.md: the resume table lacks {key}"
