import numpy as np
import pytest

from cdface.config import CDConfig
from cdface.errors import ConfigError
from cdface.train.cd_sampler import FaceBatchSampler


def _setup(num_classes=20, per_class=10, seed=0):
    labels = np.repeat(np.arange(num_classes), per_class)
    class_to_indices = [np.flatnonzero(labels == c) for c in range(num_classes)]
    scores = np.random.default_rng(seed).uniform(0, 1, labels.size).astype(np.float32)
    return labels, class_to_indices, scores


def _sampler(labels, cti, scores, rank=0, world=1, cd=True, batch=40):
    cfg = CDConfig(num_classes=4, num_easy=3, num_hard=1, interval=2, num_negatives=5)
    return FaceBatchSampler(labels, cti, batch, rank=rank, world_size=world, seed=5,
                            cd=cfg if cd else None, scores=lambda: scores)


def test_plain_batches_cover_an_epoch_once():
    labels, cti, scores = _setup()
    sampler = _sampler(labels, cti, scores, cd=False)
    batches = list(sampler)
    assert len(batches) == len(labels) // 40
    flat = np.concatenate(batches)
    assert len(np.unique(flat)) == flat.size == 40 * len(batches)


def test_ranks_split_global_batches_and_cd_classes_without_duplicates():
    labels, cti, scores = _setup()
    world = 2
    per_rank = [list(_sampler(labels, cti, scores, rank=r, world=world)) for r in range(world)]
    samplers = [_sampler(labels, cti, scores, rank=r, world=world) for r in range(world)]
    for r in range(world):
        per_rank[r] = list(samplers[r])
    single = _sampler(labels, cti, scores, cd=False)
    for step, global_batch in enumerate(single):
        local = [per_rank[r][step][:20] for r in range(world)]
        assert local[0] + local[1] == global_batch  # contiguous slices of the same global batch
        if step % 2 == 0:
            plans = [samplers[r].take_plan(step) for r in range(world)]
            assert np.array_equal(plans[0].classes, plans[1].classes)
            mine = [set(p.local_classes.tolist()) for p in plans]
            assert not mine[0] & mine[1]
            batch_labels = labels[global_batch]
            assert set(plans[0].classes.tolist()) <= set(batch_labels.tolist())
            for r in range(world):
                extra = np.array(per_rank[r][step][20:]).reshape(len(plans[r].local_classes), 4)
                t = plans[r].threshold
                for cls, row in zip(plans[r].local_classes, extra):
                    assert (labels[row] == cls).all()
                    easy, hard = scores[row[:3]], scores[row[3:]]
                    members = scores[cti[cls]]
                    if (members > t).sum() >= 3:  # otherwise the miner widens its window (tested there)
                        assert (easy > t).all()
                    if (members < t).sum() >= 1:
                        assert (hard < t).all()
                # the logits row of each class comes from a batch sample of that class
                rows = np.array(global_batch)[plans[r].owner_rank * 20 + plans[r].owner_row]
                assert np.array_equal(labels[rows], plans[r].classes)
        else:
            assert len(per_rank[0][step]) == 20


def test_resume_replays_batches_drawn_ahead():
    labels, cti, scores = _setup()
    live = scores.copy()
    a = _sampler(labels, cti, live)
    it = iter(a)
    drawn = [next(it) for _ in range(4)]  # a loader prefetches batches 0..3 ...
    a.take_plan(0)  # ... and has trained step 0 when the checkpoint is written
    state = a.state_dict()
    live[:] = np.random.default_rng(9).uniform(0, 1, live.size)  # later training changes the scores
    b = _sampler(labels, cti, live)
    b.load_state_dict(state)
    b.set_epoch(0, start_batch=1)
    replayed = [next(iter(b)) for _ in range(1)]
    assert replayed[0] == drawn[1]
    rest = list(b)
    assert rest[:3] == drawn[1:4]


def test_batch_size_must_split_over_ranks():
    labels, cti, scores = _setup()
    with pytest.raises(ConfigError, match="batch_size: the global batch of 40 cannot be split over 3 processes"):
        _sampler(labels, cti, scores, world=3)


def test_a_batch_larger_than_the_set_is_a_config_error_naming_the_key():
    labels, cti, scores = _setup(num_classes=2, per_class=10)
    with pytest.raises(ConfigError, match=r"batch_size: 40 is larger than the training set \(20 samples\)"):
        _sampler(labels, cti, scores)


def test_an_accumulated_step_larger_than_the_set_is_a_config_error_naming_grad_accum():
    # 100 samples hold 2 micro-batches of 40 but no step of 3: before, the run trained 0 steps and exited 0
    labels, cti, scores = _setup(num_classes=10, per_class=10)
    with pytest.raises(ConfigError, match=r"grad_accum: 3 micro-batches of batch_size 40 \(120 samples\) are more "
                                          r"than the training set \(100 samples\)"):
        FaceBatchSampler(labels, cti, 40, seed=5, grad_accum=3)


def test_a_batch_with_fewer_classes_than_ranks_skips_the_cd_draw():
    labels = np.zeros(64, dtype=np.int64)  # one class only
    cti = [np.arange(64)]
    scores = np.linspace(0, 1, 64, dtype=np.float32)
    samplers = [_sampler(labels, cti, scores, rank=r, world=2, batch=16) for r in range(2)]
    for sampler in samplers:
        batches = list(sampler)
        assert all(len(b) == 8 for b in batches)  # no CD samples appended
        assert sampler.take_plan(0) is None
