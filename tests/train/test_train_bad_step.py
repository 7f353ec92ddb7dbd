"""A skipped bad step leaves no trace, whatever the optimizer path (issue 25 items 1 and 2).

The matrix {fused, not fused} x {gradient scaler, none} x {clipping, none} x {first step, later step} x
{SGD, AdamW}: a step whose loss is NaN changes no parameter, buffer, optimizer moment or step counter, and the
next applied step equals the one of a run that never had the bad step. torch's CPU GradScaler stands in for
CUDA's (the same class and the same fused-optimizer contract: ``found_inf`` handed to the kernel).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cdface.config import config_from_dict
from cdface.heads import create_head
from cdface.losses import ClosenessDiversityLoss
from cdface.train.bad_step import BadSteps
from cdface.train.distributed import DistInfo
from cdface.train.health import TrainingHealth
from cdface.train.optim import split_decay_groups
from cdface.train.score_bank import ScoreBank
from cdface.train.step import MicroBatch, TrainStep

CLASSES, SAMPLES, DIM, SIDE, BATCH = 6, 48, 8, 4, 12


class _Tiny(nn.Module):
    """A linear backbone with a BatchNorm (running statistics and a batch counter: buffers a forward changes)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * SIDE * SIDE, DIM)
        self.bn = nn.BatchNorm1d(DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(x.flatten(1)))


class _Run:
    """One TrainStep on a tiny model; the steps listed in ``bad`` get their loss replaced by ``poison(loss)``."""

    def __init__(self, optimizer: str, fused: bool, scaler: bool, clip: bool, bad: set[int], poison=None) -> None:
        torch.manual_seed(0)
        self.cfg = config_from_dict({
            "method": "arcface", "batch_size": BATCH, "device": "cpu",
            "head": {"name": "arcface", "params": {"s": 16.0, "m": 0.3}},
            "optim": {"optimizer": optimizer, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                      "grad_clip": 0.05 if clip else 0.0, "scheduler": "constant", "milestones": []},
        })
        self.model = _Tiny()
        self.head = create_head("arcface", DIM, CLASSES, s=16.0, m=0.3)
        decay, no_decay = split_decay_groups([self.model, self.head])
        groups = [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}]
        if optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9, fused=fused)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=0.01, fused=fused)
        scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        self.scaler = torch.amp.GradScaler("cpu", enabled=scaler)
        self.scores = ScoreBank(SAMPLES, seed=0)
        self.step = TrainStep(
            self.cfg, DistInfo(), torch.device("cpu"), self.model, self.head, [], self.optimizer, scheduler,
            self.scaler, self.scores, ClosenessDiversityLoss(s=16.0), TrainingHealth(1.0, torch.device("cpu"), 0),
            BadSteps(torch.device("cpu"), limit=3), local_batch=BATCH,
            fault_hook=lambda step, loss: poison(loss) if step in bad else loss,
        )
        data = torch.Generator().manual_seed(1)
        self.images = torch.randn(SAMPLES, 3, SIDE, SIDE, generator=data)
        self.labels = torch.arange(SAMPLES) % CLASSES
        self.index = 0

    def run(self, batch: np.ndarray) -> None:
        idx = torch.from_numpy(batch)
        self.step([MicroBatch(self.images[idx], self.labels[idx], idx)], self.index)
        self.index += 1

    def state(self) -> dict[str, torch.Tensor]:
        """Every parameter, buffer and optimizer state entry (moments, step counters), by name."""
        found = {f"param {k}": v.detach().clone() for k, v in self.model.named_parameters()}
        found |= {f"param head.{k}": v.detach().clone() for k, v in self.head.named_parameters()}
        found |= {f"buffer {k}": v.clone() for k, v in self.model.named_buffers()}
        found |= {f"buffer head.{k}": v.clone() for k, v in self.head.named_buffers()}
        for i, entry in self.optimizer.state_dict()["state"].items():
            found |= {f"optimizer {i}.{k}": torch.as_tensor(v).clone() for k, v in entry.items()}
        return found


def _assert_same(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor], what: str) -> None:
    assert sorted(got) == sorted(want), f"{what}: entries {sorted(set(got) ^ set(want))} differ"
    differ = [k for k in want if not torch.equal(want[k], got[k])]
    assert not differ, f"{what}: {differ[:4]} differ (e.g. {got[differ[0]].flatten()[:3].tolist()} for " \
                       f"{want[differ[0]].flatten()[:3].tolist()})"


POISONS = {
    # NaN gradients (an overflow in the backward looks the same to the optimizer)
    "nan_grads": lambda loss: loss * float("nan"),
    # a non-finite loss with finite gradients (a constant added): only the bad flag can skip this step, the
    # gradients themselves look fine to the scaler's own check
    "finite_grads": lambda loss: loss + float("nan"),
}


@pytest.mark.parametrize("poison", sorted(POISONS))
@pytest.mark.parametrize("when", ["first", "later"])
@pytest.mark.parametrize("clip", [False, True], ids=["no_clip", "clip"])
@pytest.mark.parametrize("scaler", [False, True], ids=["no_scaler", "scaler"])
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_skipped_step_leaves_no_trace_and_the_next_step_is_the_one_without_it(optimizer, fused, scaler, clip,
                                                                                 when, poison):
    good = 0 if when == "first" else 2  # good steps before the bad one
    order = np.random.default_rng(0).permutation(SAMPLES)
    batches = [order[i * BATCH : (i + 1) * BATCH] for i in range(SAMPLES // BATCH)]
    poisoned = _Run(optimizer, fused, scaler, clip, bad={good}, poison=POISONS[poison])
    clean = _Run(optimizer, fused, scaler, clip, bad=set())  # never has the bad step
    for batch in batches[:good]:
        poisoned.run(batch)
        clean.run(batch)
    before = poisoned.state()
    poisoned.run(batches[good])  # the bad step: skipped
    _assert_same(before, poisoned.state(), "the skipped step changed")
    poisoned.run(batches[good + 1])  # the next applied step ...
    clean.run(batches[good + 1])
    _assert_same(clean.state(), poisoned.state(), "the next applied step differs from the run without the bad step")
    after = poisoned.state()
    assert not torch.equal(after["param fc.weight"], before["param fc.weight"])  # ... which did train
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    if scaler:  # the scaler saw the skipped step as an overflow: it backed its scale off, as it does for one
        assert poisoned.scaler.get_scale() == clean.scaler.get_scale() / 2
