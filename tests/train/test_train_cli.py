"""`cdface train` as a user meets it: Ctrl-C, a batch that does not split over the processes, real errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml

from cdface.errors import CdfaceError
from cdface.train import checkpoint as ckpt
from cdface.train.cli import DistributedRunError, explain_runtime_error

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", **extra}


def _config(tmp_path: Path, face_set: dict, **extra) -> Path:
    values = {
        "name": "cli",
        "output_dir": str(tmp_path / "runs"),
        "batch_size": 16,
        "epochs": 20.0,
        "device": "cpu",
        "tensorboard": False,
        "log_every": 1,
        "checkpoint_every": 1,
        "data": {"kind": "recordio", "path": str(face_set["rec"]), "num_workers": 0},
        "model": {"arch": "iresnet_tiny", "embedding_size": 32},
        "optim": {"lr": 0.05, "milestones": []},
        **extra,
    }
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_ctrl_c_prints_one_line_naming_the_checkpoint_and_the_resume_command(tiny_face_set, tmp_path):
    config = _config(tmp_path, tiny_face_set)
    # SIGINT back to its default in the child: a runner started in the background (`cmd &` in a script) ignores
    # it, the child would inherit that, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen([sys.executable, "-m", "cdface", "train", str(config), "seed=0"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpt_dir = tmp_path / "runs" / "cli" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and ckpt.latest_valid_checkpoint(ckpt_dir) is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"  # 120 steps: it cannot finish
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    newest = ckpt.latest_valid_checkpoint(ckpt_dir)
    assert last == f"interrupted; newest checkpoint {newest}; continue with: cdface train {config} seed=0 resume=auto"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.distributed
def test_a_batch_that_does_not_split_over_three_processes_is_one_error_printed_once(tiny_face_set, tmp_path):
    """torchrun --nproc_per_node=3 with batch_size 8: no traceback, one line from rank 0, every rank exits 2."""
    config = _config(tmp_path, tiny_face_set, batch_size=8)
    port = _free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m", "cdface", "train", str(config)],
                         env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                                  LOCAL_RANK=str(rank), WORLD_SIZE="3"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in range(3)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [2, 2, 2], results  # a user error, as `cdface` exits for one
    errors = [err.strip().splitlines() for _, err in results]
    assert errors[0] == [
        "cdface train: error: batch_size: the global batch of 8 cannot be split over 3 processes; "
        "use a multiple of 3 (e.g. 6 or 9)"
    ], results[0]
    assert errors[1] == errors[2] == [], results
    assert not (tmp_path / "runs" / "cli").exists()  # nothing written for a run that never started


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_only_a_collectives_own_peer_failure_is_reported_as_a_dead_rank(process_group):
    peer = dist.DistBackendError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:2901")
    explained = explain_runtime_error(peer, None)
    assert isinstance(explained, DistributedRunError)
    assert "another rank died or stopped responding" in str(explained) and "resume=auto" in str(explained)
    assert "DistBackendError: [gloo/transport/tcp/pair.cc:534] Connection closed by peer" in str(explained)
    # any other error under DDP is the error itself, not a story about another rank
    bug = RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)")
    assert explain_runtime_error(bug, None) is bug


def test_out_of_memory_is_named_with_what_to_lower():
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    explained = explain_runtime_error(oom, None)
    assert isinstance(explained, CdfaceError) and not isinstance(explained, DistributedRunError)
    assert "out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); lower batch_size" in str(explained)


def test_no_help_text_shows_a_doubled_percent_sign():
    # argparse %-formats help strings but prints descriptions as written: ablate's said "95%% t-interval"
    from cdface.cli import _all_parsers, build_parser

    for parser in _all_parsers(build_parser()):
        assert "%%" not in parser.format_help(), parser.prog
