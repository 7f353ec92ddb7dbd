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


def test_every_training_guarantee_names_an_existing_test():
    gen = _generator()
    for _what, _rule, path, function in gen.rc.TRAINING_GUARANTEES:
        assert function in gen._functions(ROOT / path), f"{path}::{function} does not exist"
