"""Evaluation integrity: `cdface score pairs` gives bit-identical JSON across fresh processes.

tests/eval/test_eval_pairs.py::test_cli_pairs_json_contract already repeats the command in one process;
this runs it here and in a fresh interpreter with different hash seeds and BLAS/OpenMP thread counts, so
set/dict ordering or thread-dependent reductions would show up as differing bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from cdface.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"


def test_score_pairs_json_is_bit_identical_across_processes(tmp_path, capsys):
    rng = np.random.default_rng(11)
    n, dim = 300, 64
    same = rng.random(n) < 0.5
    a = rng.standard_normal((n, dim)).astype(np.float32)
    b = np.where(same[:, None], a + 0.8 * rng.standard_normal((n, dim)), rng.standard_normal((n, dim)))
    emb = np.empty((2 * n, dim), np.float32)
    emb[0::2], emb[1::2] = a, b.astype(np.float32)
    np.save(tmp_path / "emb.npy", emb)
    np.save(tmp_path / "same.npy", same)
    argv = ["score", "pairs", "--embeddings", str(tmp_path / "emb.npy"), "--issame", str(tmp_path / "same.npy"),
            "--curves", "--out"]
    # run 1: in this process
    assert main([*argv, str(tmp_path / "run0.json")]) == 0
    stdout0 = capsys.readouterr().out.encode()
    # run 2: a fresh interpreter, another hash seed and another BLAS/OpenMP thread count
    threads = "2" if os.environ.get("OMP_NUM_THREADS") == "1" else "1"
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": threads,
           "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    proc = subprocess.run([sys.executable, "-m", "cdface", *argv, str(tmp_path / "run1.json")],
                          env=env, capture_output=True, timeout=120, check=True)
    file0, file1 = (tmp_path / "run0.json").read_bytes(), (tmp_path / "run1.json").read_bytes()
    assert file0 == file1
    assert stdout0 == proc.stdout
    assert file0 == stdout0
    result = json.loads(file0)
    assert 0.6 < result["accuracy"] <= 1.0 and len(result["fpr"]) == len(result["tpr"]) > 10
