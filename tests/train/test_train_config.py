import re
from pathlib import Path

import pytest
import torch

from cdface.config import TrainConfig, check_world_size, load_config, parse_overrides
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


@pytest.mark.parametrize(
    "override, message",
    [
        ("log_every=0", "log_every: must be >= 1, got 0"),
        ("checkpoint_every=0", "checkpoint_every: must be >= 1, got 0"),
        ("epochs=-1", "epochs: must be > 0.0, got -1.0"),
        ("max_steps=-5", "max_steps: must be >= 0, got -5"),
        ("max_bad_steps=0", "max_bad_steps: must be >= 1, got 0"),
        ("optim.lr=0", "optim.lr: must be > 0.0, got 0.0"),
        ("optim.momentum=1.0", "optim.momentum: must be in [0.0, 1.0), got 1.0"),
        ("data.flip_p=1.5", "data.flip_p: must be in [0.0, 1.0], got 1.5"),
        ("data.num_workers=-1", "data.num_workers: must be >= 0, got -1"),
        ("model.dropout=1.0", "model.dropout: must be in [0.0, 1.0), got 1.0"),
        ("cd.num_easy=0", "cd.num_easy: must be >= 1, got 0"),
        ("dist_timeout_s=.nan", "dist_timeout_s: must be a number, got nan"),
    ],
)
def test_out_of_range_values_are_refused_at_load_time_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(f"override {override!r}: {message}")):
        load_config(None, [override])


def test_margin_names_are_the_head_registrys():
    from cdface.heads import MARGINS

    for name in MARGINS:
        assert load_config(None, [f"head.name={name}"]).head.name == name
    with pytest.raises(ConfigError) as info:
        load_config(None, ["head.name=sphereface"])
    assert str(info.value).endswith(f"is not one of {', '.join(MARGINS)}")


def test_model_fp16_is_refused_in_favour_of_precision_fp16():
    with pytest.raises(ConfigError, match="model.fp16: true .* without a gradient scaler.*use precision: fp16"):
        load_config(None, ["model.fp16=true"])
    assert load_config(None, ["precision=fp16"]).precision == "fp16"


def test_overwrite_and_resume_together_are_refused():
    with pytest.raises(ConfigError, match="overwrite: true starts the run afresh, resume: auto continues it"):
        load_config(None, ["overwrite=true", "resume=auto"])


def test_a_batch_that_does_not_split_over_the_processes_is_a_config_error():
    check_world_size(9, 3)
    with pytest.raises(ConfigError, match=r"batch_size: the global batch of 8 cannot be split over 3 processes; "
                                          r"use a multiple of 3 \(e.g. 6 or 9\)"):
        check_world_size(8, 3)


@pytest.mark.parametrize("arch, value", [("ir18", 0.0), ("iresnet_tiny", 0.0), ("iresnet_tiny", 0.25)])
def test_an_explicit_dropout_reaches_the_model_zero_included(arch, value):
    """ir18's own default is 0.4: the config's 0.0 must still be what the model gets (and what it records)."""
    from cdface.models import create_model
    from cdface.train.model_options import model_options

    cfg = load_config(None, [f"model.arch={arch}", "model.embedding_size=8", f"model.dropout={value}"])
    model = create_model(arch, embedding_size=8, **model_options(cfg))
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [value]
    assert model.model_kwargs["dropout"] == value


def test_an_option_the_architecture_lacks_is_a_config_error():
    from cdface.train.model_options import model_options

    cfg = load_config(None, ["model.arch=mobilefacenet"])
    assert "dropout" not in model_options(cfg)  # 0.0 is what an architecture without dropout does
    cfg = load_config(None, ["model.arch=mobilefacenet", "model.dropout=0.2"])
    with pytest.raises(ConfigError, match="model.dropout: mobilefacenet has no dropout option .*leave it at 0.0"):
        model_options(cfg)


def test_head_params_merge_key_by_key_unless_the_margin_changes(tmp_path):
    """`head.params.m=0.4` over a file with s=16 keeps s (replacing the dict dropped s to the margin's default
    64: the collapse regime at small class counts); naming another margin starts from its own parameters."""
    (tmp_path / "base.yaml").write_text("head: {name: arcface, params: {s: 16.0, m: 0.5}}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nhead: {params: {m: 0.3}}\n")
    assert load_config(tmp_path / "base.yaml", ["head.params.m=0.4"]).head.params == {"s": 16.0, "m": 0.4}
    assert load_config(tmp_path / "child.yaml").head.params == {"s": 16.0, "m": 0.3}
    assert load_config(tmp_path / "base.yaml", ["head.name=cosface"]).head.params == {}
    cosface = load_config(tmp_path / "base.yaml", ["head.name=cosface", "head.params.m=0.35"])
    assert cosface.head.name == "cosface" and cosface.head.params == {"m": 0.35}
    # the parameters given on the command line belong to the margin named there, in whichever order they come
    # (head.params.m=0.35 before head.name=cosface was dropped: cosface ran with its default m)
    for order in (["head.params.m=0.35", "head.name=cosface"], ["head.name=cosface", "head.params.m=0.35"]):
        assert load_config(tmp_path / "base.yaml", order).head.params == {"m": 0.35}, order
    # a file naming another margin than the defaults' does not inherit arcface's default m=0.5
    (tmp_path / "cos.yaml").write_text("head: {name: cosface}\n")
    assert load_config(tmp_path / "cos.yaml").head.params == {}


def test_a_child_naming_the_margin_in_force_keeps_the_base_chains_head_params(tmp_path):
    # the margin rule is judged against the values in force: a base that sets arcface's params without naming the
    # margin, and a child that names arcface "to be explicit", gave s=64, m=0.5 (the defaults) instead of s=32, m=0.4
    (tmp_path / "base.yaml").write_text("head: {params: {s: 32.0, m: 0.4}}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nhead: {name: arcface}\n")
    assert load_config(tmp_path / "child.yaml").head.params == {"s": 32.0, "m": 0.4}
    (tmp_path / "grandchild.yaml").write_text("base: child.yaml\nhead: {name: arcface, params: {m: 0.3}}\n")
    assert load_config(tmp_path / "grandchild.yaml").head.params == {"s": 32.0, "m": 0.3}
    # a real change of margin down the chain still starts from the new margin's own parameters
    (tmp_path / "cos.yaml").write_text("head: {name: cosface, params: {m: 0.35}}\n")
    (tmp_path / "cos_s32.yaml").write_text("base: cos.yaml\nhead: {params: {s: 32.0}}\n")
    (tmp_path / "back.yaml").write_text("base: cos_s32.yaml\nhead: {name: arcface}\n")
    assert load_config(tmp_path / "cos_s32.yaml").head.params == {"m": 0.35, "s": 32.0}
    back = load_config(tmp_path / "back.yaml")
    assert back.head.name == "arcface" and back.head.params == {}


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("5E-4", 5e-4), ("1e6", 1e6), ("+2.5e1", 25.0)])
def test_exponent_floats_without_a_dot_are_numbers(tmp_path, text, value):
    # YAML 1.1 (PyYAML) reads 1e-3 as a string: optim.lr=1e-3 was refused as "expected a number, got '1e-3'"
    assert load_config(None, [f"optim.lr={text}"]).optim.lr == value
    (tmp_path / "c.yaml").write_text(f"optim: {{weight_decay: {text}}}\n")
    assert load_config(tmp_path / "c.yaml").optim.weight_decay == value
    with pytest.raises(ConfigError, match="optim.lr: expected a number, got '1e'"):
        load_config(None, ["optim.lr=1e"])
    with pytest.raises(ConfigError, match="max_steps: expected an integer, got '1e3'"):
        load_config(None, ["max_steps=1e3"])


def test_partial_fc_without_the_sharded_head_is_refused_naming_the_key():
    # the replicated head has no Partial FC: head.sample_rate=0.3 alone trained the full softmax without a word
    with pytest.raises(ConfigError, match="head.sample_rate: 0.3 needs head.sharded: true"):
        load_config(None, ["head.sample_rate=0.3"])
    assert load_config(None, ["head.sample_rate=0.3", "head.sharded=true"]).head.sample_rate == 0.3


def test_a_bad_head_parameter_names_the_override_it_came_from(tmp_path):
    # head.params is a mapping merged key by key: the error named the file of the section, not the override
    (tmp_path / "c.yaml").write_text("head: {name: arcface, params: {s: 16.0, m: 0.5}}\n")
    with pytest.raises(ConfigError, match=r"^override 'head.params.s=abc': head.params.s: expected a number"):
        load_config(tmp_path / "c.yaml", ["head.params.s=abc"])
    (tmp_path / "d.yaml").write_text("base: c.yaml\nhead: {params: {m: oops}}\n")
    with pytest.raises(ConfigError, match=r"d.yaml: head.params.m: expected a number"):
        load_config(tmp_path / "d.yaml")


REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_a_shipped_config_is_taken_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    # `cdface train synthetic_arcface --show-config` failed ("cannot read config"): shipped configs needed a path
    from cdface.cli import main

    monkeypatch.chdir(tmp_path)
    by_path = load_config(REPO_CONFIGS / "synthetic_cd.yaml")
    assert load_config("synthetic_cd") == by_path and load_config("synthetic_cd.yaml") == by_path
    assert main(["train", "synthetic_arcface", "--show-config", "max_steps=3"]) == 0
    shown = capsys.readouterr().out
    assert "name: synthetic_arcface" in shown and "max_steps: 3" in shown
    # a file of that name in the working folder is the user's own and wins; a path with a folder is never a name
    (tmp_path / "synthetic_cd.yaml").write_text("name: mine\n")
    assert load_config("synthetic_cd.yaml").name == "mine"
    with pytest.raises(ConfigError, match=r"sub/synthetic_arcface.yaml: cannot read config"):
        load_config("sub/synthetic_arcface.yaml")
    # a user's config may build on a shipped one by name
    (tmp_path / "own" / "x").mkdir(parents=True)
    (tmp_path / "own" / "x" / "c.yaml").write_text("base: ms1mv2_r100_arcface.yaml\nbatch_size: 64\n")
    own = load_config(tmp_path / "own" / "x" / "c.yaml")
    assert own.batch_size == 64 and own.model == load_config("ms1mv2_r100_arcface").model
    # an unknown name lists the shipped ones
    with pytest.raises(ConfigError, match=r"^nope: cannot read config .*shipped configs, by name: .*synthetic_arcface"):
        load_config("nope")


def test_shipped_configs_are_found_installed_or_in_a_checkout(tmp_path):
    from cdface.config import shipped_config_dir, shipped_configs

    wheel = tmp_path / "site-packages" / "cdface"
    (wheel / "configs").mkdir(parents=True)
    assert shipped_config_dir(wheel) == wheel / "configs"  # package data of an installed wheel
    checkout = tmp_path / "repo" / "src" / "cdface"
    checkout.mkdir(parents=True)
    (tmp_path / "repo" / "configs").mkdir()
    assert shipped_config_dir(checkout) == tmp_path / "repo" / "configs"
    assert shipped_config_dir(tmp_path / "bare" / "src" / "cdface") is None
    assert set(shipped_configs()) == {p.stem for p in REPO_CONFIGS.glob("*.yaml")}


def test_train_help_lists_the_shipped_configs_by_name():
    from cdface.train.cli import _train_epilog

    epilog = _train_epilog()
    assert "shipped configs (by name" in epilog
    assert all(p.stem in epilog for p in REPO_CONFIGS.glob("*.yaml"))
