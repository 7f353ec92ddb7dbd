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


def test_target_may_be_named_as_in_results_md(tmp_path):
    entries = [{"model": "m.onnx", "results": {"/data/a/lfw.bin": {"threshold": 1.0},
                                                "/data/b/lfw.bin": {"threshold": 1.2},
                                                "/data/cfp_fp.bin": {"threshold": 1.4}}}]
    results = _results(tmp_path, entries)
    assert threshold_from_results(results, target="cfp_fp").distance == 1.4
    assert threshold_from_results(results, target="b/lfw").distance == 1.2
    assert threshold_from_results(results, target="/data/a/lfw.bin").distance == 1.0
    with pytest.raises(ConfigError, match="no pair-set threshold for target 'lfw'"):  # two are called lfw
        threshold_from_results(results, target="lfw")
