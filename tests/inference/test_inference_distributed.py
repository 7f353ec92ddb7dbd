"""`cdface eval` over two gloo processes: features gathered in the original order, the numbers of one process."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from inference_mock_data import write_pairs_bin, write_tinyface

from cdface.cli import main

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _argv(model: Path, root: Path) -> list[str]:
    return ["eval", "--model", str(model), "--arch", "iresnet_tiny", "--targets", "lfw,tinyface", "--data-root",
            str(root), "--json", "--no-progress", "--workers", "0", "--batch-size", "4", "--device", "cpu"]


def _worker(rank: int, world: int, port: int, model: str, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from cdface.data.pairs_bin import load_bin
    from cdface.inference.distributed import eval_process_group
    from cdface.inference.embedder import FaceEmbedder
    from cdface.inference.extract import EncodedImages, extract_features

    out_dir = Path(out)
    try:
        with open(out_dir / f"stdout{rank}.txt", "w") as so, open(out_dir / f"stderr{rank}.txt", "w") as se:
            with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
                rc = main([*_argv(Path(model), Path(root)), "--out", str(out_dir / "results")])
                pairs = load_bin(Path(root) / "lfw.bin")
                embedder = FaceEmbedder(model, device="cpu", batch_size=3, arch="iresnet_tiny")
                eval_process_group("cpu")
                feats = extract_features(embedder, EncodedImages(pairs.images, "lfw.bin"), 3, 0, False)
        np.save(out_dir / f"plain{rank}.npy", feats.plain)
        np.save(out_dir / f"flipped{rank}.npy", feats.flipped)
        (out_dir / f"rc{rank}.txt").write_text(str(rc))
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_equal_one(tmp_path, capsys):
    from cdface.data.pairs_bin import load_bin
    from cdface.inference.embedder import FaceEmbedder
    from cdface.inference.extract import EncodedImages, extract_features
    from cdface.models import create_model

    root = tmp_path / "data"
    write_pairs_bin(root / "lfw.bin", num_pairs=21)  # 42 images in batches of 4: blocks of 20 and 22
    write_tinyface(root)
    model = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(create_model("iresnet_tiny", embedding_size=16).state_dict(), model)
    out = tmp_path / "dist"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(model), str(root), str(out)), nprocs=2, join=True)
    assert (out / "rc0.txt").read_text() == "0" and (out / "rc1.txt").read_text() == "0"

    # the gathered features are the single-process rows, in order, on every rank
    single = extract_features(FaceEmbedder(str(model), device="cpu", batch_size=3, arch="iresnet_tiny"),
                              EncodedImages(load_bin(root / "lfw.bin").images, "lfw.bin"), 3, 0, False)
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(out / f"plain{rank}.npy"), single.plain)
        np.testing.assert_array_equal(np.load(out / f"flipped{rank}.npy"), single.flipped)

    # the protocol numbers equal a one-process run; only rank 0 reports
    assert main(_argv(model, root)) == 0
    expected = json.loads(capsys.readouterr().out)
    got = json.loads((out / "stdout0.txt").read_text())
    diff = {t: {k: (v, expected[t].get(k)) for k, v in m.items() if v != expected[t].get(k)} for t, m in got.items()}
    assert got == expected, diff
    assert (out / "stdout1.txt").read_text() == ""
    assert (out / "results" / "results.json").is_file()
    for rank in (0, 1):
        log = (out / f"stderr{rank}.txt").read_text()
        assert f"[rank {rank}/2] lfw: {20 if rank == 0 else 22} images in" in log and "images/s" in log


def test_shard_bounds_cover_in_whole_batches():
    from cdface.inference.distributed import shard_bounds

    for n, world, bs in ((42, 2, 4), (5, 3, 4), (0, 2, 8), (100, 8, 7), (7, 2, 1)):
        blocks = [shard_bounds(n, r, world, bs) for r in range(world)]
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
        assert all(start % bs == 0 for start, stop in blocks if stop > start)
