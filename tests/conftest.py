"""Shared fixtures: a tiny synthetic face set (RecordIO + .bin) built once per test process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Two pytest-xdist workers share two cores: one intra-op thread each avoids oversubscription,
# which otherwise slows small convolutions by an order of magnitude.
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


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
