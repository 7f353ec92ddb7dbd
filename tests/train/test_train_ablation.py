"""The ablation harness: its statistics against scipy, its metrics against slow loops, and one tiny study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cdface.config import config_from_dict
from cdface.data.synthetic import build_synthetic_benchmark, eval_hard_flags
from cdface.eval.verification import evaluate_pairs
from cdface.heads import create_margin
from cdface.train.ablation import (
    hard_pair_accuracy,
    mechanism_metrics,
    paired_difference,
    summarise,
    t_quantile_975,
)
from cdface.train.trainer import resolve_cd_scale


def test_t_quantiles_equal_scipy():
    stats = pytest.importorskip("scipy.stats")
    for dof in range(1, 40):
        assert t_quantile_975(dof) == pytest.approx(stats.t.ppf(0.975, dof) if dof <= 30 else 1.959964, abs=6e-4)


def test_paired_interval_equals_scipy():
    stats = pytest.importorskip("scipy.stats")
    diffs = np.array([0.012, -0.004, 0.02, 0.007])
    got = paired_difference(diffs)
    low, high = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    assert got["mean"] == pytest.approx(diffs.mean())
    assert (got["low"], got["high"]) == pytest.approx((low, high), abs=1e-5)
    assert np.isnan(paired_difference(np.array([0.01]))["low"])  # one seed: no interval


def test_summary_pairs_each_variant_with_the_baseline_seed_by_seed():
    rows = [
        {"variant": v, "seed": s, "accuracy": a, "tar_at_far_1e-2": a / 2}
        for v, s, a in [("arcface", 0, 0.90), ("arcface", 1, 0.92), ("cd", 0, 0.91), ("cd", 1, 0.95)]
    ]
    summary = summarise(rows)
    assert summary["cd"]["accuracy"]["mean"] == pytest.approx(0.93)
    assert summary["cd"]["accuracy"]["std"] == pytest.approx(np.std([0.91, 0.95], ddof=1))
    assert summary["cd"]["accuracy_vs_arcface"]["mean"] == pytest.approx(0.02)  # (0.01 + 0.03) / 2
    assert "accuracy_vs_arcface" not in summary["arcface"]


def test_the_table_pairs_with_the_chosen_baseline():
    # the wd study pairs every CD weight with CD at wd=1: the table printed "–" for every Δ (arcface hard-coded)
    from cdface.train.ablation import format_ablation

    metrics = {"accuracy": 0.9, "tar_at_far_1e-2": 0.5, "tar_at_far_1e-1": 0.8, "hard_pair_accuracy": 0.7,
               "train_accuracy": 0.99, "easy_intra_class_variance": 0.2, "hardest_own_cosine": 0.6,
               "hardest_nearest_wrong_cosine": 0.5, "cd_closeness": 0.1, "cd_diversity": 0.2}
    rows = [metrics | {"variant": v, "seed": s, "accuracy": a}
            for v, s, a in [("cd", 0, 0.90), ("cd", 1, 0.92), ("cd_wd0.5", 0, 0.91), ("cd_wd0.5", 1, 0.95)]]
    result = {"preset": "cpu", "baseline": "cd", "stage1": metrics, "summary": summarise(rows, "cd"), "scale": 0.5}
    table = format_ablation(result)
    assert table.startswith("# cdface ablation (cpu preset at --scale 0.5, below its documented regime, 2 seed(s))")
    assert "paired difference to closeness & diversity (same seed)" in table
    wd_line = next(line for line in table.splitlines() if line.startswith("| CD, wd=0.5 |"))
    assert "| +2.00 [" in wd_line  # (0.01 + 0.03) / 2 in points, with its interval


def test_mechanism_metrics_equal_slow_loops():
    g = torch.Generator().manual_seed(1)
    n, c, d = 120, 6, 8
    labels = np.repeat(np.arange(c), n // c)
    emb = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    centres = torch.randn(c, d, generator=g) * 3
    scores = np.random.default_rng(2).uniform(-0.2, 0.9, n)
    got = mechanism_metrics(emb, labels, centres, scores, percentile=0.2)

    unit_c = centres / centres.norm(dim=1, keepdim=True)
    split = np.quantile(scores, 0.2)
    variances, own, wrong, correct = [], [], [], 0
    for k in range(c):
        easy = [emb[i] for i in range(n) if labels[i] == k and scores[i] >= split]
        if len(easy) >= 2:
            mean = torch.stack(easy).mean(0)
            variances.append(np.mean([float((e - mean).pow(2).sum()) for e in easy]))
    hardest_cut = np.quantile(scores, 0.05)
    for i in range(n):
        cos = [float(emb[i] @ unit_c[j]) for j in range(c)]
        correct += int(np.argmax(cos) == labels[i])
        if scores[i] <= hardest_cut:
            own.append(cos[labels[i]])
            wrong.append(max(v for j, v in enumerate(cos) if j != labels[i]))
    assert got["train_accuracy"] == pytest.approx(correct / n)
    assert got["easy_intra_class_variance"] == pytest.approx(np.mean(variances), abs=1e-5)
    assert got["hardest_own_cosine"] == pytest.approx(np.mean(own), abs=1e-6)
    assert got["hardest_nearest_wrong_cosine"] == pytest.approx(np.mean(wrong), abs=1e-6)


def test_hard_pair_accuracy_uses_each_folds_threshold():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(2 * 200, 16))
    issame = np.repeat([True, False], 100).reshape(10, 20)
    issame = np.concatenate([np.concatenate([row[:10], row[10:]]) for row in issame])
    emb[1::2][issame] = emb[0::2][issame] + rng.normal(scale=0.8, size=(issame.sum(), 16))
    result = evaluate_pairs(emb, issame)
    hard = rng.random(200) < 0.3
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = ((unit[0::2] - unit[1::2]) ** 2).sum(1)
    hits = [
        (dist[i] < result.fold_thresholds[i // 20]) == issame[i] for i in range(200) if hard[i]
    ]
    assert hard_pair_accuracy(emb, issame, hard, result.fold_thresholds) == pytest.approx(np.mean(hits))
    assert np.isnan(hard_pair_accuracy(emb, issame, np.zeros(200, bool), result.fold_thresholds))


def test_eval_hard_flags_replay_the_generator(tmp_path):
    paths = build_synthetic_benchmark(tmp_path, num_train_ids=2, images_per_id=1, num_eval_ids=30, num_pairs=400,
                                      hard_fraction=0.25)
    flags = eval_hard_flags(paths["manifest"])
    assert flags.shape == (800,) and flags.dtype == bool
    assert 0.19 < flags.mean() < 0.31  # Binomial(800, 0.25): 6 standard deviations either side
    assert np.array_equal(flags, eval_hard_flags(paths["manifest"]))
    manifest = json.loads(paths["manifest"].read_text())
    manifest["hard_fraction"] = 0.0
    paths["manifest"].write_text(json.dumps(manifest))
    assert not eval_hard_flags(paths["manifest"]).any()


def test_cd_scale_follows_the_head_unless_set():
    cfg = config_from_dict({"head": {"name": "arcface", "params": {"s": 16.0, "m": 0.5}}})
    margin = create_margin("arcface", s=16.0, m=0.5)
    assert cfg.cd.s is None and resolve_cd_scale(cfg, margin) == 16.0
    cfg.cd.s = 64.0
    assert resolve_cd_scale(cfg, margin) == 64.0


@pytest.mark.slow
def test_ablate_cli_trains_every_variant_and_seed_from_one_stage1(tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "cdface", "ablate", "--out", str(out), "--scale", "0.05", "--seeds", "0,1",
           "--variants", "arcface,cd,diversity"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "ablation.json").read_text())
    assert sorted((r["variant"], r["seed"]) for r in result["rows"]) == sorted(
        (v, s) for v in ("arcface", "cd", "diversity") for s in (0, 1)
    )
    # every stage-2 run started from the one stage-1 checkpoint
    stage1_ckpt = result["stage1"]["run"]
    for row in result["rows"]:
        cfg_text = (tmp_path / row["run"] / "config.yaml").read_text()
        assert f"init_from: {stage1_ckpt}/checkpoints/" in cfg_text
    cd_rows = [r for r in result["rows"] if r["variant"] != "arcface"]
    assert all(r["cd_diversity"] == r["cd_diversity"] for r in cd_rows)  # logged, not NaN
    assert "accuracy_vs_arcface" in result["summary"]["cd"]
    table = (out / "ablation.md").read_text()
    assert "closeness & diversity" in table and "diversity only (wc=0)" in table and "[" in table
    # a second call finds every run finished and only re-evaluates: same numbers
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0
    assert json.loads((out / "ablation.json").read_text())["rows"] == result["rows"]


@pytest.mark.slow
def test_ablate_trains_one_stage1_per_stage1_seed_and_pairs_within_it(tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "cdface", "ablate", "--out", str(out), "--scale", "0.05", "--seeds", "0",
           "--stage1-seeds", "0,2", "--variants", "arcface,cd"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "ablation.json").read_text())
    stage1_runs = {r["stage1_seed"]: r["run"] for r in result["stage1_runs"]}
    assert stage1_runs == {0: str(out / "stage1_arcface"), 2: str(out / "stage1_seed2" / "stage1_arcface")}
    for row in result["rows"]:  # each stage-2 run starts from its own stage 1
        cfg_text = (out / row["run"] / "config.yaml").read_text()
        assert f"init_from: {stage1_runs[row['stage1_seed']]}/checkpoints/" in cfg_text
    import yaml

    stage1_cfgs = [yaml.safe_load((Path(run) / "config.yaml").read_text()) for run in stage1_runs.values()]
    assert [c["seed"] for c in stage1_cfgs] == [0, 2]
    assert all(c["data"]["path"] == str(out / "data") for c in stage1_cfgs)  # one data set, built once
    assert not (out / "stage1_seed2" / "data").exists()
    assert result["summary"]["cd"]["seeds"] == [[0, 0], [2, 0]]
    assert set(result["by_stage1"]) == {"0", "2"}
    assert "The same Δ within each stage 1" in (out / "ablation.md").read_text()
    refused = subprocess.run(cmd + ["seed=3"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--stage1-seeds" in refused.stderr and "Traceback" not in refused.stderr


def test_gpu_preset_is_the_documented_one(tmp_path):
    from cdface.train.ablation import stage_configs

    stage1, stage2 = stage_configs("gpu", tmp_path)
    assert stage1.model.arch == "iresnet50" and stage1.precision == "bf16" and stage1.device == "cuda"
    assert stage1.data.synthetic_identities >= 20_000 and stage1.batch_size == 512
    assert stage2["cd"]["num_classes"] == 64 and stage2["epochs"] < stage1.epochs


@pytest.mark.parametrize("override", [["head.params.m=0.4"], ["optim.lr=0.2", "cd.wd=0.5"]])
def test_ablation_presets_merge_overrides_as_the_config_loader_does(tmp_path, override):
    """One deep merge: `cdface ablate`'s preset + key=value gives the config that `cdface train` gives for the
    same preset as a YAML file + the same key=value (head.params merged key by key in both)."""
    import yaml

    from cdface.config import load_config, parse_overrides
    from cdface.train.ablation import preset_base, stage_configs

    base = preset_base("cpu", tmp_path, 0.2, 0)
    stage1, _ = stage_configs("cpu", tmp_path, scale=0.2, overrides=parse_overrides(override))
    (tmp_path / "preset.yaml").write_text(yaml.safe_dump(base))
    loaded = load_config(tmp_path / "preset.yaml", override)
    for item in override:
        section, field = item.split("=")[0].split(".")[:2]  # head.params.m: compare the whole of head.params
        assert getattr(getattr(stage1, section), field) == getattr(getattr(loaded, section), field)
    want = {**base["head"]["params"], "m": 0.4} if override == ["head.params.m=0.4"] else base["head"]["params"]
    assert stage1.head.params == want  # the preset's s stays


def test_runs_pair_on_their_stage1_and_seed():
    # two stage 1s with the same stage-2 seeds: keyed by seed alone, the second stage 1's runs replaced the
    # first's, and the difference paired runs of different stage 1s
    rows = [
        {"variant": v, "stage1_seed": k, "seed": s, "accuracy": a, "tar_at_far_1e-2": a}
        for v, k, s, a in [("cd", 0, 0, 0.90), ("cd", 0, 1, 0.92), ("cd", 1, 0, 0.80), ("cd", 1, 1, 0.84),
                           ("cd_wd0.5", 0, 0, 0.91), ("cd_wd0.5", 0, 1, 0.95), ("cd_wd0.5", 1, 0, 0.80),
                           ("cd_wd0.5", 1, 1, 0.83)]
    ]
    summary = summarise(rows, "cd")
    assert summary["cd"]["accuracy"]["mean"] == pytest.approx(np.mean([0.90, 0.92, 0.80, 0.84]))
    assert summary["cd_wd0.5"]["seeds"] == [[0, 0], [0, 1], [1, 0], [1, 1]]
    diffs = np.array([0.01, 0.03, 0.0, -0.01])
    assert summary["cd_wd0.5"]["accuracy_vs_cd"] == pytest.approx(paired_difference(diffs))
    from cdface.train.ablation import summarise_by_stage1

    per = summarise_by_stage1(rows, "cd")
    assert per["0"]["cd_wd0.5"]["accuracy_vs_cd"]["mean"] == pytest.approx(0.02)
    assert per["1"]["cd_wd0.5"]["accuracy_vs_cd"]["mean"] == pytest.approx(-0.005)


def test_a_study_over_several_stage1s_tables_each_stage1s_differences():
    from cdface.train.ablation import format_ablation, mean_row, summarise_by_stage1

    metrics = {"accuracy": 0.9, "tar_at_far_1e-2": 0.5, "tar_at_far_1e-1": 0.8, "hard_pair_accuracy": 0.7,
               "train_accuracy": 0.99, "easy_intra_class_variance": 0.2, "hardest_own_cosine": 0.6,
               "hardest_nearest_wrong_cosine": 0.5, "cd_closeness": 0.1, "cd_diversity": 0.2}
    rows = [metrics | {"variant": v, "stage1_seed": k, "seed": s, "accuracy": a}
            for v, k, s, a in [("cd", 0, 0, 0.90), ("cd", 0, 1, 0.92), ("arcface", 0, 0, 0.91), ("arcface", 0, 1, 0.95),
                               ("cd", 4, 0, 0.90), ("cd", 4, 1, 0.92), ("arcface", 4, 0, 0.89),
                               ("arcface", 4, 1, 0.90)]]
    stage1_runs = [metrics | {"stage1_seed": 0, "accuracy": 0.93}, metrics | {"stage1_seed": 4, "accuracy": 0.95}]
    result = {"preset": "cpu", "baseline": "arcface", "stage1": mean_row(stage1_runs), "stage1_runs": stage1_runs,
              "summary": summarise(rows, "arcface"), "by_stage1": summarise_by_stage1(rows, "arcface")}
    assert result["stage1"]["accuracy"] == pytest.approx(0.94)
    table = format_ablation(result)
    assert table.startswith("# cdface ablation (cpu preset, 2 stage-1 seeds, 4 runs)")
    assert "seed 0: pair accuracy 93.00 %" in table and "seed 4: pair accuracy 95.00 %" in table
    assert "(same stage 1 and seed)" in table
    per_stage1 = [line for line in table.splitlines() if line.startswith("| closeness & diversity | ")]
    # after the main table's row, one per stage 1 (TAR is equal within each pair here), then the mechanism row
    assert per_stage1[1:3] == ["| closeness & diversity | 0 | -2.00 [-14.71, +10.71] | +0.00 [+0.00, +0.00] |",
                               "| closeness & diversity | 4 | +1.50 [-4.85, +7.85] | +0.00 [+0.00, +0.00] |"]
