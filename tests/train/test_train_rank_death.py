"""A DDP rank dies mid-run: the survivor exits with a clear error within the timeout, and the job resumes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cdface.train import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(config: Path, world: int, port: int, extra: list[str], log_dir: Path) -> list[subprocess.Popen]:
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "src"),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "OMP_NUM_THREADS": "1",
        }
        log = open(log_dir / f"rank{rank}.log", "w")  # noqa: SIM115 (closed by the process' end)
        procs.append(subprocess.Popen([sys.executable, "-m", "cdface", "train", str(config), *extra],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def test_survivor_fails_clearly_then_resume_auto_finishes(tiny_face_set, tmp_path):
    cfg = {
        "name": "ddp_death",
        "output_dir": str(tmp_path / "runs"),
        "batch_size": 16,
        "epochs": 3.0,
        "device": "cpu",
        "tensorboard": False,
        "log_every": 1,
        "checkpoint_every": 2,
        "dist_timeout_s": 20.0,
        "data": {"kind": "recordio", "path": str(tiny_face_set["rec"]), "num_workers": 0},
        "model": {"arch": "iresnet_tiny", "embedding_size": 32},
        "optim": {"lr": 0.05, "milestones": []},
    }
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(cfg))
    ckpt_dir = tmp_path / "runs" / "ddp_death" / "checkpoints"

    procs = _launch(config, 2, _free_port(), [], tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and ckpt.latest_valid_checkpoint(ckpt_dir) is None:
        assert all(p.poll() is None for p in procs), (tmp_path / "rank0.log").read_text()
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    try:
        code = procs[0].wait(timeout=cfg["dist_timeout_s"] + 40)
    finally:
        for p in procs:
            p.kill()
    waited = time.time() - killed_at
    log = (tmp_path / "rank0.log").read_text()
    assert code != 0 and waited < cfg["dist_timeout_s"] + 40
    assert "another rank died or stopped responding" in log and "resume=auto" in log, log[-2000:]

    procs = _launch(config, 2, _free_port(), ["resume=auto"], tmp_path)
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0], (tmp_path / "rank0.log").read_text()[-2000:]
    final = ckpt.latest_valid_checkpoint(ckpt_dir)
    assert final is not None and ckpt.load_checkpoint(final)["step"] == 18
    assert "resumed from" in (tmp_path / "rank0.log").read_text()
