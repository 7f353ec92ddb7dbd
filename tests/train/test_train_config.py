from pathlib import Path

import pytest

from cdface.config import TrainConfig, load_config, parse_overrides
from cdface.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_paper_settings():
    cfg = TrainConfig()
    assert (cfg.cd.num_easy, cfg.cd.num_hard, cfg.cd.num_classes, cfg.cd.num_negatives) == (7, 1, 64, 500)
    assert (cfg.cd.wc, cfg.cd.wd, cfg.cd.percentile, cfg.cd.interval) == (0.5, 1.0, 0.2, 5)
    assert cfg.optim.milestones == [10.0, 18.0, 22.0] and cfg.optim.weight_decay == 5e-4
    assert cfg.scores.momentum == 0.9 and cfg.batch_size == 512


def test_yaml_base_chain_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("batch_size: 128\noptim:\n  lr: 0.05\n  momentum: 0.8\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\noptim:\n  lr: 0.02\nmethod: cd\n")
    cfg = load_config(tmp_path / "child.yaml", ["cd.num_easy=3", "optim.milestones=[1, 2]"])
    assert cfg.batch_size == 128 and cfg.optim.lr == 0.02 and cfg.optim.momentum == 0.8
    assert cfg.method == "cd" and cfg.cd.num_easy == 3 and cfg.optim.milestones == [1.0, 2.0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("batchsize: 3\n", "unknown key 'batchsize'"),
        ("optim:\n  lr: fast\n", "optim.lr: expected a number"),
        ("method: triplet\n", "method: 'triplet' is not one of arcface, cd"),
        ("cd:\n  num_easy: 2.5\n", "cd.num_easy: expected an integer"),
        ("tensorboard: 1\n", "tensorboard: expected true or false"),
        ("- a\n- b\n", "must be a mapping"),
        ("data: [1]\n", "data: expected a mapping"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(path)


def test_unknown_key_lists_allowed_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("cd:\n  nume: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "cd.nume" in str(info.value) and "num_easy" in str(info.value)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr0.1"])


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_every_shipped_config_loads():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs, "configs/ ships the paper's and the baselines' configs"
    for path in configs:
        load_config(path)
