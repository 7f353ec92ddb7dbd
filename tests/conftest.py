"""Shared fixtures: a tiny synthetic face set (RecordIO + .bin) built once per test process."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

# Two pytest-xdist workers share two cores: one intra-op thread each avoids oversubscription,
# which otherwise slows small convolutions by an order of magnitude.
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Caches (RecordIO label tables) go to a temporary folder, not the user's ~/.cache, during tests."""
    import os

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def tiny_face_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from cdface.data.synthetic import build_synthetic_benchmark

    root = tmp_path_factory.mktemp("tiny_faces")
    return build_synthetic_benchmark(
        root, num_train_ids=12, images_per_id=8, num_eval_ids=10, num_pairs=40, seed=3
    )


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (it only exists in the cdface development workplace)")
    return SHARED


@pytest.fixture
def sigint_raises_keyboardinterrupt():
    """SIGINT handled as in a terminal (Python's KeyboardInterrupt) for the test, whatever the runner inherited.

    A runner started in the background (`make test &`, some CI shells) inherits SIGINT ignored, and Python then
    installs no handler: a test of Ctrl-C would see nothing happen.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)

