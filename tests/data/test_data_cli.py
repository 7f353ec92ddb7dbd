"""`cdface data ...` subcommands through the real argument parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from cdface.data import cli
from cdface.data.decode import encode_jpeg
from cdface.data.pairs_bin import load_bin
from cdface.data.recordio import RecordIOReader

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "realfaces"


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cdface")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_pack_then_inspect(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for cls, count in (("b", 2), ("a", 3)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
            (tmp_path / "imgs" / cls / f"{i}.jpg").write_bytes(encode_jpeg(image))
    assert _run(["data", "pack", str(tmp_path / "imgs"), str(tmp_path / "out")]) == 0
    reader = RecordIOReader(tmp_path / "out" / "train.rec")
    assert reader.read(1)[1] == (tmp_path / "imgs" / "a" / "0.jpg").read_bytes()  # JPEG bytes kept as is
    capsys.readouterr()
    assert _run(["data", "inspect", str(tmp_path / "out"), "--json", "--check"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "insightface" and summary["images"] == 5 and summary["classes"] == 2
    assert summary["per_class"]["first"] == [3, 2] and summary["bad_records"] == []


def test_synthetic_and_inspect_bin(tmp_path, capsys):
    out = tmp_path / "syn"
    argv = [
        "data",
        "synthetic",
        str(out),
        "--identities",
        "4",
        "--images-per-id",
        "2",
        "--eval-identities",
        "3",
        "--pairs",
        "20",
    ]
    assert _run(argv) == 0
    assert len(load_bin(out / "eval.bin")) == 20
    capsys.readouterr()
    assert _run(["data", "inspect", str(out / "eval.bin"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["pairs"], summary["same"], summary["images"]) == (20, 10, 40)


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/realfaces not present")
def test_inspect_real_rec(capsys):
    assert _run(["data", "inspect", str(REAL / "train.rec"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 640 and summary["classes"] == 16 and summary["property"] == "16,112,112"


def test_make_bin(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("X", "Y"):
        (tmp_path / name).mkdir()
        for i in (1, 2):
            data = encode_jpeg(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
            (tmp_path / name / f"{name}_{i:04d}.jpg").write_bytes(data)
    (tmp_path / "pairs.txt").write_text("X 1 2\nX 1 Y 2\n")
    assert _run(["data", "make-bin", str(tmp_path), str(tmp_path / "pairs.txt"), str(tmp_path / "o.bin")]) == 0
    assert load_bin(tmp_path / "o.bin").issame.tolist() == [True, False]
