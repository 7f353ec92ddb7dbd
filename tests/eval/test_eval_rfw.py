"""RFW scoring: per-race accuracies with known answers, mean / std / SER by their definitions, the CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from cdface.eval.cli import register
from cdface.eval.rfw import evaluate_rfw, read_rfw_landmarks, rfw_summary
from cdface.eval.verification import evaluate_pairs


def _race_pairs(bad_per_fold: int, folds: int = 10, per_fold: int = 20, seed: int = 0):
    """Embeddings (2N, 2) whose genuine pairs are 5 deg apart and impostors 120 deg, except `bad_per_fold`
    genuine pairs per fold at 120 deg: every fold's best threshold then errs on exactly those."""
    rng = np.random.default_rng(seed)
    emb, same = [], []
    for _ in range(folds):
        for k in range(per_fold):
            genuine = k < per_fold // 2
            bad = genuine and k < bad_per_fold
            base = rng.uniform(0, 2 * np.pi)
            gap = np.deg2rad(120 if (bad or not genuine) else 5)
            emb += [[np.cos(base), np.sin(base)], [np.cos(base + gap), np.sin(base + gap)]]
            same.append(genuine)
    return np.array(emb), np.array(same)


def test_known_accuracies_mean_std_ser():
    bad = {"African": 1, "Asian": 2, "Caucasian": 3, "Indian": 1}
    data = {race: _race_pairs(n, seed=i) for i, (race, n) in enumerate(bad.items())}
    res = evaluate_rfw({r: d[0] for r, d in data.items()}, {r: d[1] for r, d in data.items()})
    expected = {race: 1 - n / 20 for race, n in bad.items()}
    for race, acc in expected.items():
        assert res.per_race[race].accuracy == pytest.approx(acc, abs=1e-12)
    accs = np.array(list(expected.values()))
    assert res.mean_accuracy == pytest.approx(accs.mean(), abs=1e-12)
    assert res.std_accuracy == pytest.approx(np.sqrt(np.mean((accs - accs.mean()) ** 2)), abs=1e-12)
    assert res.ser == pytest.approx(0.15 / 0.05, rel=1e-9)
    assert (res.best_race, res.worst_race) == ("African", "Caucasian")
    out = res.to_dict()
    assert set(out["races"]) == set(bad) and out["races"]["Asian"]["num_pairs"] == 200


def test_summary_agrees_with_slow_loop():
    rng = np.random.default_rng(3)
    per_race = {}
    for race in ("African", "Asian", "Caucasian", "Indian"):
        emb = rng.normal(size=(400, 6))
        emb[1::2][:100] = emb[0::2][:100] + 0.8 * rng.normal(size=(100, 6))
        per_race[race] = evaluate_pairs(emb, np.r_[np.ones(100), np.zeros(100)].astype(bool))
    res = rfw_summary(per_race)
    accs = [per_race[r].accuracy for r in per_race]
    errors = [1 - a for a in accs]
    mean = sum(accs) / 4
    assert res.mean_accuracy == pytest.approx(mean, abs=1e-15)
    assert res.std_accuracy == pytest.approx((sum((a - mean) ** 2 for a in accs) / 4) ** 0.5, abs=1e-15)
    assert res.ser == pytest.approx(max(errors) / min(errors), rel=1e-12)


def test_ser_without_error():
    emb, same = _race_pairs(0)
    res = evaluate_rfw({"A": emb, "B": _race_pairs(1)[0]}, {"A": same, "B": _race_pairs(1)[1]})
    assert res.ser == np.inf and res.to_dict()["ser"] is None


def test_landmark_file(tmp_path):
    path = tmp_path / "African_lmk.txt"
    path.write_text("/test/data/African/m.0a/m.0a_0001.jpg\t0\t" + "\t".join(str(v) for v in range(10)) + "\n"
                    "m.0b_0002.jpg " + " ".join(str(v + 0.5) for v in range(10)) + "\n")
    table = read_rfw_landmarks(path)
    np.testing.assert_array_equal(table["m.0a_0001.jpg"], np.arange(10.0).reshape(5, 2))
    np.testing.assert_array_equal(table["m.0b_0002.jpg"], np.arange(10.0).reshape(5, 2) + 0.5)
    path.write_text("m.0a_0001.jpg 1 2 3\n")
    from cdface.errors import FormatError

    with pytest.raises(FormatError, match="line 1"):
        read_rfw_landmarks(path)


def test_cli_rfw(tmp_path, capsys):
    argv = ["score", "rfw"]
    arrays = {}
    for i, race in enumerate(("African", "Asian")):
        emb, same = _race_pairs(i + 1, seed=i)
        np.save(tmp_path / f"{race}.npy", emb)
        np.save(tmp_path / f"{race}_same.npy", same)
        argv += ["--race", race, str(tmp_path / f"{race}.npy"), str(tmp_path / f"{race}_same.npy")]
        arrays[race] = (emb, same)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] == {"African": pytest.approx(0.95), "Asian": pytest.approx(0.9)}
    assert out["ser"] == pytest.approx(2.0) and out["worst_race"] == "Asian"
