"""benchmarks/gpu_suite.py --dry-run: every part runs (tiny, CPU) and lands in the JSON and Markdown files,
without simplejpeg (the GPU machine has none), so the suite cannot rot between GPU runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
PART_NAMES = [
    "train_iresnet100",
    "train_ir100",
    "train_data_iresnet100",
    "eval",
    "extract",
    "head_1m",
    "sync",
    "train_iresnet100_compile",
    "train_ir100_compile",
]


def _run(tmp_path: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict, str]:
    # A simplejpeg that fails to import, first on the path of the suite and of its part processes.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "simplejpeg.py").write_text("raise ImportError('hidden: the GPU machine has no simplejpeg')\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(hide), str(ROOT / "src")]))
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(SUITE), "--dry-run", "--out", str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (json_path,) = out.glob("dryrun_gpu_suite_cpu_*.json")
    (md_path,) = out.glob("dryrun_gpu_suite_cpu_*.md")
    assert json_path.stem == md_path.stem
    return proc, json.loads(json_path.read_text()), md_path.read_text()


def test_budget_spent_skips_parts_and_still_writes_both_files(tmp_path):
    _, report, md = _run(tmp_path, "--budget-s", "1", timeout=300)
    assert [p["name"] for p in report["parts"]] == PART_NAMES
    assert all(p["status"] == "skipped" and p["rows"] == [] and "budget" in p["note"] for p in report["parts"])
    env = report["environment"]
    assert env["device"] == "cpu" and env["torch"] and env["date_utc"]
    assert env["jpeg_decoder"] == "Pillow (simplejpeg absent)"
    for name in PART_NAMES:
        assert f"| {name} | skipped |" in md


@pytest.mark.slow
def test_dry_run_measures_every_part(tmp_path):
    _, report, md = _run(tmp_path, "--budget-s", "3000", timeout=2400)
    parts = {p["name"]: p for p in report["parts"]}
    assert list(parts) == PART_NAMES
    for name, part in parts.items():
        assert part["status"] == "ok", (name, part.get("log_tail"))
        assert part["rows"], name
        for row in part["rows"]:
            assert isinstance(row["value"], float) and math.isfinite(row["value"]) and row["value"] >= 0, row
            assert row["passed"] is None  # GPU targets are not judged on the CPU
            assert f"| {name} | {row['row']} |" in md
    units = {name: [r["unit"] for r in part["rows"]] for name, part in parts.items()}
    for name in PART_NAMES:
        if name.startswith("train"):
            assert units[name] == ["samples/s", "samples/s", "x"], name
            s1, s2, ratio = (r["value"] for r in parts[name]["rows"])
            assert s1 > 0 and s2 > 0 and ratio == pytest.approx(s2 / s1)
    assert "data" in parts["train_data_iresnet100"]["rows"][0]["row"]
    assert "RecordIO" in parts["train_data_iresnet100"]["rows"][0]["extra"]["data"]
    assert [r["row"].split(":")[0] for r in parts["eval"]["rows"]] == ["pairs", "ijb", "megaface"]
    assert units["extract"] == ["images/s"] and parts["extract"]["rows"][0]["value"] > 0
    assert units["head_1m"] == ["ms/step", "ms/step"] and "CD branch" in parts["head_1m"]["rows"][1]["row"]
    # on the CPU only the host reads are counted (set_sync_debug_mode watches CUDA): the step makes none, on
    # plain and CD steps alike (the counter itself is checked against a real read in tests/train/test_train_step.py)
    assert units["sync"] == ["calls", "calls"]
    assert [(r["value"], r["extra"]["calls"]) for r in parts["sync"]["rows"]] == [(0.0, {}), (0.0, {})]
    assert report["environment"]["jpeg_decoder"] == "Pillow (simplejpeg absent)"
