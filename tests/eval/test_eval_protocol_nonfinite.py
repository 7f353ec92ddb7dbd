"""`cdface score identification | erc | rfw` share `score`'s non-finite gate: counted, marked invalid, exit 3."""

from __future__ import annotations

import json

import numpy as np

from cdface.cli import main


def test_nonfinite_features_are_counted_and_fail_unless_allowed(tmp_path, capsys):
    rng = np.random.default_rng(0)
    probe, gallery = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(6, 8)).astype(np.float32)
    probe[1] = np.nan
    for name, arr in {"p": probe, "g": gallery, "lp": np.array([0, 1, 2, 3]), "lg": np.arange(6)}.items():
        np.save(tmp_path / f"{name}.npy", arr)
    argv = ["score", "identification", "--probe", str(tmp_path / "p.npy"), "--probe-labels", str(tmp_path / "lp.npy"),
            "--gallery", str(tmp_path / "g.npy"), "--gallery-labels", str(tmp_path / "lg.npy"), "--ranks", "1"]
    assert main(argv) == 3
    printed = json.loads(capsys.readouterr().out)
    assert printed["valid"] is False and printed["nonfinite_embeddings"] == 1
    assert main([*argv, "--allow-nonfinite"]) == 0
    capsys.readouterr()
    np.save(tmp_path / "p.npy", np.nan_to_num(probe))
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True
