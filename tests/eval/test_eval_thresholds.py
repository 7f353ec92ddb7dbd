"""threshold_from_results picks the model's own threshold out of a results.json holding several models."""

from __future__ import annotations

import json

import pytest

from cdface.errors import ConfigError
from cdface.eval.thresholds import threshold_from_results
from cdface.files import sha256_file


def _results(tmp_path, entries):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"models": entries}))
    return path


def test_same_file_name_in_two_runs_is_told_apart_by_contents_not_name(tmp_path):
    for run, data in (("run1", b"weights one"), ("run2", b"weights two")):
        (tmp_path / run).mkdir()
        (tmp_path / run / "backbone.pt").write_bytes(data)
    entries = [
        {"model": "run1/backbone.pt", "sha256": sha256_file(tmp_path / "run1" / "backbone.pt"),
         "results": {"lfw": {"threshold": 1.0}}},
        {"model": "run2/backbone.pt", "sha256": sha256_file(tmp_path / "run2" / "backbone.pt"),
         "results": {"lfw": {"threshold": 1.5}}},
    ]
    results = _results(tmp_path, entries)
    # evaluated with relative paths, compared with an absolute one: run2's threshold, not the first name match
    assert threshold_from_results(results, model=str(tmp_path / "run2" / "backbone.pt")).distance == 1.5
    assert threshold_from_results(results, model="run1/backbone.pt").distance == 1.0
    (tmp_path / "run3").mkdir()
    (tmp_path / "run3" / "backbone.pt").write_bytes(b"weights three")
    with pytest.raises(ConfigError, match="several models"):  # a third model sharing only the name
        threshold_from_results(results, model=str(tmp_path / "run3" / "backbone.pt"))
    entries[1]["model"] = "other/r100.pth"  # a file name that is unique still picks
    assert threshold_from_results(_results(tmp_path, entries), model="/elsewhere/r100.pth").distance == 1.5
