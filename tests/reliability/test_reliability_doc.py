"""docs/robustness.md is generated from the case tables and must be up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_robustness_doc", ROOT / "scripts" / "gen_robustness_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_robustness_doc_is_up_to_date(tmp_path):
    gen = _generator()
    out = tmp_path / "robustness.md"
    assert gen.main(["--out", str(out)]) == 0
    committed = ROOT / "docs" / "robustness.md"
    assert committed.is_file(), "run: python scripts/gen_robustness_doc.py"
    assert out.read_text() == committed.read_text(), "docs/robustness.md is stale: python scripts/gen_robustness_doc.py"


def test_doc_counts_come_from_the_sources():
    gen = _generator()
    kills = gen.kill_tests(ROOT / "tests" / "train" / "test_train_fit.py")
    names = {name: n for name, n, _ in kills}
    assert names.get("test_kill_minus_nine_then_resume") == 1
    assert names.get("test_resume_is_bitwise_equal_to_uninterrupted") == 2
    assert gen.max_examples(ROOT / "tests" / "data" / "test_data_recordio.py",
                            "test_fuzz_corrupted_rec_raises_only_project_errors") > 0
    text = gen.render()
    for case in gen.rc.MALFORMED_CASES:
        assert f"| {case.id} |" in text
    total = sum(n for f in gen.rc.KILL_TESTS_FILES for _, n, _ in gen.kill_tests(ROOT / f))
    assert total > sum(names.values())  # the DDP and rank-death files add their own
    assert f"Kill points survived: {total}" in text
