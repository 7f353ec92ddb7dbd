"""The training step on its own: gradient accumulation, no host reads, bad steps skipped on the device."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from cdface.config import config_from_dict
from cdface.heads import create_head, create_margin
from cdface.losses import ClosenessDiversityLoss
from cdface.parallel import ShardedMarginHead
from cdface.train.bad_step import BadSteps
from cdface.train.cd_sampler import FaceBatchSampler
from cdface.train.distributed import DistInfo
from cdface.train.health import TrainingHealth
from cdface.train.optim import build_optimizer
from cdface.train.score_bank import ScoreBank
from cdface.train.step import MicroBatch, TrainStep

CDFACE_SRC = str(Path(__file__).resolve().parents[2] / "src" / "cdface")
CLASSES, PER_CLASS, DIM, SIDE = 12, 8, 16, 8


class _Flat(nn.Module):
    """A backbone without BatchNorm: accumulation must then equal one large batch exactly (up to float)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * SIDE * SIDE, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _cfg(batch_size: int, grad_accum: int = 1, method: str = "arcface", **extra) -> object:
    return config_from_dict({
        "method": method, "batch_size": batch_size, "grad_accum": grad_accum, "device": "cpu",
        "head": {"name": "arcface", "params": {"s": 16.0, "m": 0.3}},
        "optim": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "scheduler": "constant",
                  "milestones": []},
        "cd": {"num_classes": 3, "num_easy": 3, "num_hard": 1, "num_negatives": 4, "interval": 2},
        **extra,
    })


class _FlatBN(_Flat):
    """With a BatchNorm: its running statistics change in every training forward."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(super().forward(x))


class _Setup:
    """A TrainStep with its collaborators, on random images of CLASSES x PER_CLASS samples."""

    def __init__(self, cfg, seed: int = 0, fault_hook=None, model: type[nn.Module] = _Flat,
                 info: DistInfo = DistInfo(), sharded: bool = False) -> None:
        """``info``: this process's rank in an initialised process group; ``sharded``: a ShardedMarginHead
        (centres split over the ranks) instead of the replicated head."""
        torch.manual_seed(seed)
        self.cfg = cfg
        self.labels = np.repeat(np.arange(CLASSES), PER_CLASS)
        self.images = torch.randn(len(self.labels), 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
        self.model = model()
        if sharded:
            self.head = ShardedMarginHead(DIM, CLASSES, create_margin("arcface", s=16.0, m=0.3),
                                          rows_per_rank=cfg.batch_size // info.world_size)
        else:
            self.head = create_head("arcface", DIM, CLASSES, s=16.0, m=0.3)
        self.optimizer = build_optimizer(cfg.optim, [self.model, self.head])
        scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.scores = ScoreBank(len(self.labels), seed=0)
        self.bad_steps = BadSteps(torch.device("cpu"), limit=3)
        self.sampler = FaceBatchSampler(
            self.labels, [np.flatnonzero(self.labels == c) for c in range(CLASSES)], batch_size=cfg.batch_size,
            rank=info.rank, world_size=info.world_size, seed=0, cd=cfg.cd if cfg.method == "cd" else None,
            scores=self.scores.lagged, grad_accum=cfg.grad_accum,
        )
        self.sampler.set_epoch(0)
        self.batches = iter(self.sampler)
        self.step = TrainStep(
            cfg, info, torch.device("cpu"), self.model, self.head, [], self.optimizer, scheduler, scaler,
            self.scores, ClosenessDiversityLoss(s=16.0), TrainingHealth(1.0, torch.device("cpu"), 0),
            self.bad_steps, local_batch=self.sampler.local_batch, fault_hook=fault_hook,
        )
        self.index = 0
        self.cd_steps = 0

    def micro_batch(self, indices: list[int]) -> MicroBatch:
        idx = torch.tensor(indices)
        n = self.sampler.local_batch
        return MicroBatch(self.images[idx], torch.from_numpy(self.labels[idx[:n].numpy()]), idx[:n])

    def run(self, steps: int, during_step=None) -> None:
        """``steps`` optimizer steps; ``during_step``: a context entered around each step call only (the
        sampler's draws run on the host, ahead of the step, as the DataLoader runs them in fit)."""
        for _ in range(steps):
            batches = [self.micro_batch(next(self.batches)) for _ in range(self.cfg.grad_accum)]
            batches[-1].plan = self.sampler.take_plan(self.index)
            self.cd_steps += batches[-1].plan is not None
            if during_step is None:
                self.step(batches, self.index)
            else:
                with during_step:
                    self.step(batches, self.index)
            self.index += 1

    def weights(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in [*self.model.parameters(), *self.head.parameters()]]


def test_accumulated_micro_batches_give_the_update_of_one_large_batch() -> None:
    """grad_accum 4 x batch 6 against grad_accum 1 x batch 24 over the same 24 samples, two optimizer steps."""
    small, large = _Setup(_cfg(6, grad_accum=4)), _Setup(_cfg(24))
    order = np.random.default_rng(0).permutation(len(small.labels))[:48]
    for step in range(2):
        chunk = order[24 * step : 24 * (step + 1)].tolist()
        small.step([small.micro_batch(chunk[i : i + 6]) for i in range(0, 24, 6)], step)
        large.step([large.micro_batch(chunk)], step)
    for a, b in zip(small.weights(), large.weights(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the difficulty scores got the same EMA steps (one per sample and step)
    torch.testing.assert_close(small.scores.scores, large.scores.scores, rtol=0, atol=1e-6)
    # and the weights did move (the comparison is not between two untouched models)
    assert not torch.equal(small.weights()[0], _Setup(_cfg(6)).weights()[0])


def test_under_accumulation_the_cd_samples_ride_on_the_last_micro_batch_and_interval_counts_steps() -> None:
    setup = _Setup(_cfg(8, grad_accum=3, method="cd"))
    assert setup.sampler.steps_per_epoch == len(setup.labels) // 8 // 3 == 4
    drawn = [next(setup.batches) for _ in range(3 * 4)]  # 4 optimizer steps of 3 micro-batches
    sizes = [len(batch) for batch in drawn]
    extra = 3 * (3 + 1)  # K classes x (NE + NH)
    # interval 2: optimizer steps 0 and 2 are CD steps, and only their last micro-batch carries the samples
    assert sizes == [8, 8, 8 + extra, 8, 8, 8, 8, 8, 8 + extra, 8, 8, 8]
    plan = setup.sampler.take_plan(0)
    assert plan is not None and setup.sampler.take_plan(1) is None and setup.sampler.take_plan(2) is not None
    # the CD classes and their query rows come from that last micro-batch
    last = setup.labels[drawn[2][:8]]
    assert set(plan.classes) <= set(last) and all(last[plan.owner_row] == plan.classes)


class _HostReads(TorchFunctionMode):
    """Counts calls that read a tensor's value on the host (on a GPU each waits for the device), made directly
    by cdface's code (calls inside torch or the test are not counted), and, through ``_BackwardHostReads``, the
    same inside the backward of cdface's autograd Functions."""

    NAMES = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu", "nonzero", "unique",
             "masked_select", "_local_scalar_dense", "argwhere", "unique_consecutive", "repeat_interleave"}

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self._backward: _BackwardHostReads | None = None

    def __enter__(self):
        self._backward = _BackwardHostReads(self.calls)
        self._backward.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        assert self._backward is not None
        self._backward.__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        bool_index = name in ("__getitem__", "__setitem__") and len(args) > 1 and _has_bool_tensor(args[1])
        if name in self.NAMES or bool_index:
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(CDFACE_SRC):
                self.calls.append(f"{name} at {Path(caller.f_code.co_filename).name}:{caller.f_lineno}")
        return func(*args, **(kwargs or {}))


class _BackwardHostReads(TorchDispatchMode):
    """The same count inside the backward of cdface's own autograd Functions (e.g. the sharded cross-entropy),
    which the function mode above does not see: the operators that read a device value on the host, while
    the autograd node being run is one of cdface's."""

    OPS = {"nonzero", "_local_scalar_dense", "masked_select", "_unique2", "unique_dim", "unique_consecutive",
           "repeat_interleave", "argwhere"}

    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.OPS or name in ("index", "index_put", "index_put_") and _has_bool_tensor(tuple(args[1])):
            node = torch._C._current_autograd_node()
            owner = getattr(getattr(node, "_forward_cls", None), "__module__", "")
            if owner.startswith("cdface."):
                self.calls.append(f"{name} in the backward of {owner}.{node._forward_cls.__name__}")
        return func(*args, **(kwargs or {}))


def _has_bool_tensor(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


@pytest.mark.parametrize("method", ["arcface", "cd"])
def test_steady_state_step_reads_nothing_on_the_host(method: str) -> None:
    """Plain and CD steps (interval 2, so both kinds run) make no host read; reading the flags is one."""
    setup = _Setup(_cfg(12, method=method))
    setup.run(2)  # warm-up: first steps create optimizer state
    reads = _HostReads()
    setup.run(4, during_step=reads)
    assert reads.calls == []
    with _HostReads() as reads:  # the counter sees a host read where there is one: fit's read at log steps
        setup.bad_steps.read()
    assert reads.calls and reads.calls[0].startswith("tolist")


def _sharded_host_reads(rank: int, init_file: str, out_dir: str) -> None:
    """One of 2 gloo ranks: sharded-head steps (forward, the cross-entropy's backward, CD steps with the
    distributed hard-negative gather) counted by ``_HostReads`` after a warm-up; the result goes to a file."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        setup = _Setup(_cfg(12, method="cd"), info=DistInfo(rank=rank, world_size=2), sharded=True)
        setup.run(2)  # warm-up: first steps create optimizer state
        before = setup.weights()
        reads = _HostReads()
        cd_before = setup.cd_steps
        setup.run(4, during_step=reads)  # CD steps 2 and 4, plain steps 3 and 5
        trained = not torch.equal(before[-1], setup.weights()[-1])  # this rank's centres moved
        result = {"calls": reads.calls, "cd_steps": setup.cd_steps - cd_before, "trained": trained}
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_sharded_head_steps_read_nothing_on_the_host_on_two_ranks(tmp_path: Path) -> None:
    """The sharded head's forward (no boolean-mask index), its cross-entropy's backward (no nonzero) and the CD
    step's distributed hard-negative gather (row counts known, not exchanged) read nothing on the host."""
    mp.start_processes(_sharded_host_reads, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["cd_steps"] == 2 and result["trained"], result
        assert result["calls"] == [], f"rank {rank}: {result['calls']}"


def test_a_non_finite_step_changes_nothing_and_is_counted_on_the_device() -> None:
    nan_at = {2, 3}
    setup = _Setup(_cfg(12, method="cd"), fault_hook=lambda step, loss: loss * float("nan") if step in nan_at else loss,
                   model=_FlatBN)
    setup.run(2)
    before = setup.weights()
    running = {k: v.clone() for k, v in setup.model.bn.state_dict().items() if v.is_floating_point()}
    moments = {k: v.clone() for k, v in setup.optimizer.state[next(setup.model.parameters())].items()}
    scores = setup.scores.scores.clone()
    setup.run(2)  # steps 2 (a CD step) and 3: skipped
    for a, b in zip(before, setup.weights(), strict=True):
        assert torch.equal(a, b)
    for key, value in running.items():  # the skipped forwards' BatchNorm statistics are put back too
        assert torch.equal(setup.model.bn.state_dict()[key], value), key
    for key, value in setup.optimizer.state[next(setup.model.parameters())].items():
        assert torch.equal(value, moments[key]), key
    assert torch.equal(scores, setup.scores.scores)
    assert setup.bad_steps.read() == (2, None, 4)  # steps are numbered as logged and checkpointed: the 4th
    setup.run(1)  # a good step resets the streak and trains again
    assert not torch.equal(before[0], setup.weights()[0])
    assert setup.bad_steps.read() == (0, None, 4)


def test_the_bad_step_limit_names_the_step_where_it_was_reached() -> None:
    setup = _Setup(_cfg(12), fault_hook=lambda step, loss: loss * float("nan") if step >= 1 else loss)
    setup.run(5)
    # limit 3: the 2nd, 3rd and 4th steps in a row; named as the log and the checkpoints number them (the step
    # count once done: 4), not by the 0-based index fit passes in (3), which named the step before
    assert setup.bad_steps.read() == (4, 4, 5)


def test_ddp_all_reduces_once_per_optimizer_step(tmp_path: Path) -> None:
    """One process under DDP (gloo): a comm hook counts the gradient all-reduces of the backbone and the head."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        cfg = _cfg(6, grad_accum=3, method="cd")
        setup = _Setup(cfg)
        calls = []

        def counting_hook(state, bucket):
            calls.append(bucket.index())
            future = torch.futures.Future()
            future.set_result(bucket.buffer())
            return future

        model = nn.parallel.DistributedDataParallel(setup.model)
        head = nn.parallel.DistributedDataParallel(setup.head)
        for module in (model, head):
            module.register_comm_hook(None, counting_hook)
        setup.step = TrainStep(
            cfg, DistInfo(), torch.device("cpu"), model, head, [model, head], setup.optimizer,
            setup.step.scheduler, setup.step.scaler, setup.scores, setup.step.cd_loss, setup.step.health,
            setup.bad_steps, local_batch=setup.sampler.local_batch,
        )
        for step in range(4):  # CD steps 0 and 2, plain steps 1 and 3
            calls.clear()
            setup.run(1)
            assert len(calls) == 2, f"step {step}: {len(calls)} all-reduce buckets, want one per module"
    finally:
        dist.destroy_process_group()
