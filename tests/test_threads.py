"""Thread planning: torch threads + loader workers <= cores, and a library call leaves the caller's count alone."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from cdface.threads import available_cores, plan_threads, threads_applied


@pytest.mark.parametrize(
    ("workers", "threads", "procs", "cores", "expected"),
    [
        (2, 0, 1, 2, (1, 1)),  # the old default on 2 cores: 2 + 2 -> 1 + 1
        (0, 0, 1, 2, (2, 0)),  # evaluation: every core to torch
        (8, 0, 1, 16, (8, 8)),
        (8, 0, 8, 64, (1, 7)),  # 8 GPUs of a 64-core node: 8 cores a process
        (4, 0, 1, 1, (1, 0)),  # one core: no worker
        (2, 3, 1, 2, (3, 2)),  # num_threads > 0: the user's choice, as given
    ],
)
def test_threads_plus_workers_fit_the_cores(workers, threads, procs, cores, expected):
    plan = plan_threads(workers, threads, processes_per_node=procs, cores=cores)
    assert (plan.threads, plan.workers) == expected
    if threads == 0:
        assert plan.threads + plan.workers <= max(1, cores // procs) or plan.workers == 0
    assert bool(plan.note) == (threads == 0 and plan.workers != workers)


def test_available_cores_is_the_affinity_at_most():
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


def test_threads_are_restored_after_the_block_and_after_an_error():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with threads_applied(plan_threads(0, other)):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), threads_applied(plan_threads(0, other)):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_fit_caps_workers_and_restores_threads(tmp_path, caplog):
    from cdface.config import config_from_dict
    from cdface.train.trainer import fit

    caplog.set_level(logging.INFO, logger="cdface.train")
    before = torch.get_num_threads()
    cores = available_cores()
    fit(config_from_dict({
        "name": "t", "output_dir": str(tmp_path), "batch_size": 8, "max_steps": 1, "device": "cpu",
        "tensorboard": False, "data": {"kind": "synthetic", "path": str(tmp_path / "d"), "num_workers": cores + 1,
                                       "synthetic_identities": 4, "synthetic_images_per_identity": 2,
                                       "synthetic_eval_identities": 20, "synthetic_pairs": 20},
        "model": {"arch": "iresnet_tiny", "embedding_size": 16},
    }))
    assert torch.get_num_threads() == before
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("start\n"))
    plan = plan_threads(cores + 1)
    assert f"{plan.threads} torch thread(s) + {plan.workers} loader worker(s)" in summary
    assert plan.threads + plan.workers <= cores
    assert any(f"data.num_workers {cores + 1} -> {plan.workers}" in r.getMessage() for r in caplog.records)
