"""`cdface quickstart` end to end at a small scale: its report's numbers are those of the runs it made."""

from __future__ import annotations

import json

import pytest

from cdface.cli import main
from cdface.eval import verify_pairs

pytestmark = pytest.mark.slow


def _refuse_non_json(name: str) -> None:
    raise AssertionError(f"results.json holds {name}, which strict JSON parsers refuse")


def test_quickstart_report_matches_an_independent_evaluation(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--scale", "0.1"]) == 0
    printed = capsys.readouterr().out
    assert "stage 2: closeness & diversity" in printed and "stage 2: ArcFace continued" in printed
    report = (out / "report.md").read_text()
    assert "![ROC](roc.png)" in report and (out / "roc.png").stat().st_size > 0
    assert (out / "training.png").stat().st_size > 0
    rows = json.loads((out / "results.json").read_text(), parse_constant=_refuse_non_json)  # strict JSON
    assert rows[0]["cd_closeness"] is None and rows[1]["cd_closeness"] > 0  # ArcFace has no CD term: null
    assert [r["model"] for r in rows] == [
        "stage 1: ArcFace", "stage 2: closeness & diversity", "stage 2: ArcFace continued"
    ]
    cd_metrics = [json.loads(line) for line in (out / "stage2_cd" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("cd_loss", 0) > 0 for r in cd_metrics)  # the CD loss really ran
    assert any("cd_diversity" in r and "cd_closeness" in r for r in cd_metrics)  # both terms logged
    for row in rows:
        again = verify_pairs(row["run"], out / "data" / "eval.bin", batch_size=64)
        assert again.accuracy == pytest.approx(row["accuracy"], abs=1e-12)
        assert f"{100 * row['accuracy']:.2f}" in report
        assert 0.0 <= row["train_accuracy"] <= 1.0 and f"{100 * row['train_accuracy']:.2f}" in report
    # --scale 0.1 is a smoke run: the report says so and draws no conclusion; it carries every run's health lines
    assert "## What this run shows" in report and "smoke run (--scale 0.1)" in report
    assert "no conclusion is drawn" in report and "CD reaches" not in report
    assert "smoke run (--scale 0.1)" in printed
    for name in ("stage1_arcface", "stage2_cd", "stage2_arcface"):
        for line in (out / name / "health.txt").read_text().splitlines():
            assert line in report
