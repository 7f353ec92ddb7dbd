"""ScoreBank: EMA updates, duplicates, checkpoint round trip, threshold, and averaging over 2 gloo ranks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cdface.train.score_bank import ScoreBank


def test_initial_values() -> None:
    uniform = ScoreBank(10_000)
    values = uniform.numpy()
    assert values.dtype == np.float32 and values.shape == (10_000,)
    assert values.min() >= 0.0 and values.max() < 1.0 and abs(values.mean() - 0.5) < 0.02
    assert np.array_equal(values, ScoreBank(10_000).numpy())  # seeded
    assert not np.array_equal(values, ScoreBank(10_000, seed=1).numpy())
    assert (ScoreBank(5, initial=0.0).numpy() == 0).all()
    with pytest.raises(ValueError):
        ScoreBank(5, initial="normal")


def test_ema_update_matches_loop() -> None:
    bank = ScoreBank(6, momentum=0.9, initial=0.5)
    want = np.full(6, 0.5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = rng.choice(6, size=3, replace=False)
        cos = rng.uniform(-1, 1, 3)
        bank.update(torch.from_numpy(idx), torch.from_numpy(cos).float())
        for i, c in zip(idx, cos.astype(np.float32)):
            want[i] = 0.9 * want[i] + 0.1 * c
    np.testing.assert_allclose(bank.numpy(), want, rtol=0, atol=1e-6)


def test_duplicates_take_one_step_with_their_mean_and_nan_is_skipped() -> None:
    bank = ScoreBank(4, momentum=0.9, initial=0.0)
    bank.update(np.array([2, 2, 1, 3]), np.array([0.2, 0.6, 1.0, np.nan], dtype=np.float32))
    np.testing.assert_allclose(bank.numpy(), [0.0, 0.1, 0.04, 0.0], atol=1e-7)
    with pytest.raises(RuntimeError, match=r"score indices must be in \[0, 4\)"):
        bank.update(np.array([4]), np.array([0.1]))
    with pytest.raises(ValueError):
        bank.update(np.array([0, 1]), np.array([0.1]))


def test_numpy_is_a_live_view_and_threshold() -> None:
    bank = ScoreBank(5, initial=0.0)
    view = bank.numpy()
    bank.update(np.arange(5), np.array([0.5, 0.1, 0.9, 0.3, 0.7], dtype=np.float32))
    np.testing.assert_allclose(view, [0.05, 0.01, 0.09, 0.03, 0.07], atol=1e-7)
    assert bank.threshold(p=0.4) == pytest.approx(0.05)


def test_state_round_trip_through_torch_save() -> None:
    bank = ScoreBank(100, seed=3)
    bank.update(np.arange(10), np.linspace(-1, 1, 10).astype(np.float32))
    buffer = io.BytesIO()
    torch.save(bank.state_dict(), buffer)
    buffer.seek(0)
    restored = ScoreBank(100, initial=0.0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert np.array_equal(restored.numpy(), bank.numpy())
    with pytest.raises(ValueError, match="shape"):
        ScoreBank(99).load_state_dict(bank.state_dict())


def _sync_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        bank = ScoreBank(4, momentum=0.5, initial=0.0)
        bank.update(np.array([rank, 2]), np.array([1.0, 0.2 * (rank + 1)], dtype=np.float32))
        bank.sync()
        np.save(Path(out_dir) / f"rank{rank}.npy", bank.numpy())
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_sync_averages_over_two_gloo_ranks(tmp_path: Path) -> None:
    args = (str(tmp_path / "init"), str(tmp_path))
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"  # fork: no re-import, < 1 s
    mp.start_processes(_sync_worker, args=args, nprocs=2, join=True, start_method=method)
    # rank 0 holds [0.5, 0, 0.1, 0], rank 1 holds [0, 0.5, 0.2, 0]
    for rank in (0, 1):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{rank}.npy"), [0.25, 0.25, 0.15, 0.0], atol=1e-7)


def test_sync_is_a_no_op_without_process_group() -> None:
    bank = ScoreBank(3, initial=0.25)
    bank.sync()
    assert (bank.numpy() == 0.25).all()


class _LateCopies:
    """A stand-in for the GPU's asynchronous copy: each copy lands either at once or only when waited for
    (its event's ``synchronize``), drawn at random, as a copy finishes whenever the device gets to it."""

    def __init__(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed) if seed is not None else None
        self.late = 0

    def __call__(self, dst: torch.Tensor, src: torch.Tensor):
        if self.rng is None or self.rng.random() < 0.5:
            dst.copy_(src)
            return None
        self.late += 1
        snapshot = src.clone()  # what the device will have copied once it gets there

        class Event:
            def synchronize(self) -> None:
                dst.copy_(snapshot)

        return Event()


def _updates(steps: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [(rng.integers(0, n, 6), rng.uniform(-1, 1, 6).astype(np.float32)) for _ in range(steps)]


def test_the_sampler_reads_the_scores_of_a_fixed_earlier_step_whenever_the_copies_land() -> None:
    """lagged() after k published steps is the scores after step k - 2 (the start's before that), with copies
    that land at once or late: what the CD sampler draws no longer depends on a copy's timing."""
    n, steps = 20, 12
    live = ScoreBank(n, seed=1)
    history = [live.numpy().copy()]  # the scores after 0, 1, 2, ... steps
    banks = {seed: ScoreBank(n, seed=1, copy_async=_LateCopies(seed)) for seed in (None, 0, 1, 2)}
    for indices, cosines in _updates(steps, n):
        live.update(indices, cosines)
        history.append(live.numpy().copy())
        for bank in banks.values():
            bank.update(indices, cosines)
            bank.publish()
        k = len(history) - 1
        for seed, bank in banks.items():
            np.testing.assert_array_equal(bank.lagged(), history[max(k - 2, 0)], err_msg=f"copies {seed}, step {k}")
    assert all(bank._copy.late > 0 for seed, bank in banks.items() if seed is not None)  # some copies were late


def test_a_resumed_bank_reads_what_the_uninterrupted_one_reads() -> None:
    """The ring's older copies are in the checkpoint: after a resume the sampler reads the same scores."""
    n = 20
    updates = _updates(10, n)
    straight = ScoreBank(n, seed=1, copy_async=_LateCopies(3))
    for step, (indices, cosines) in enumerate(updates):
        straight.update(indices, cosines)
        straight.publish()
        if step == 4:
            buffer = io.BytesIO()
            torch.save(straight.state_dict(), buffer)
    buffer.seek(0)
    resumed = ScoreBank(n, initial=0.0, copy_async=_LateCopies(4))
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    reads = []
    for indices, cosines in updates[5:]:
        reads.append(resumed.lagged().copy())
        resumed.update(indices, cosines)
        resumed.publish()
    again = ScoreBank(n, seed=1, copy_async=_LateCopies(3))
    for step, (indices, cosines) in enumerate(updates):
        if step >= 5:
            np.testing.assert_array_equal(reads[step - 5], again.lagged(), err_msg=f"step {step}")
        again.update(indices, cosines)
        again.publish()
