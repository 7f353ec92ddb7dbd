"""The batch sampler: global batches split over ranks, with the CD samples appended every `interval` steps.

Why a batch sampler: the easy/hard images of a CD step are then decoded by the DataLoader workers like any
other image (the reference decodes them one by one in the training loop). The sampler runs in the main
process, so it reads the live difficulty scores when it draws.

Determinism and resumption: the order of an epoch is a permutation seeded by (seed, epoch); every rank
computes the same global batch and takes its contiguous slice. The K classes of a CD step are drawn from
the *global* batch with an RNG seeded by (seed, step), so ranks agree on them and each class goes to exactly
one rank. Because the DataLoader draws a few batches ahead of the step being trained, the batches already
drawn but not yet trained on are part of the sampler's state and are replayed after a resume; a resumed run
therefore sees exactly the batches an uninterrupted run would.

Gradient accumulation (``grad_accum`` N): the sampler yields N micro-batches (each a global batch of
``batch_size``) per optimizer step; ``steps_per_epoch`` counts optimizer steps, and the CD samples of a CD
step are drawn from, and appended to, the step's last micro-batch (its RNG is seeded by the optimizer step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cdface.config import CDConfig, check_world_size
from cdface.errors import ConfigError
from cdface.miners.easy_hard import EasyHardMiner, score_threshold
from cdface.miners.hard_negatives import last_row_of_class


@dataclass
class CDPlan:
    """What the training step needs to know about the CD samples appended to its batch."""

    classes: np.ndarray  # (K,) all selected classes, across ranks
    owner_rank: np.ndarray  # (K,) rank holding the chosen batch sample of each class
    owner_row: np.ndarray  # (K,) row of that sample in its rank's batch
    local_classes: np.ndarray  # (K_rank,) this rank's classes (a contiguous slice of `classes`)
    local_slice: tuple[int, int]  # [start, end) of this rank's classes in `classes`
    threshold: float


class FaceBatchSampler(torch.utils.data.Sampler[list[int]]):
    def __init__(
        self,
        labels: np.ndarray,
        class_to_indices: list[np.ndarray],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        cd: CDConfig | None = None,
        scores: Callable[[], np.ndarray] | None = None,
        grad_accum: int = 1,
    ) -> None:
        # Config problems are ConfigErrors naming the key (the CLI prints them as one line).
        check_world_size(batch_size, world_size)
        if len(labels) < batch_size:
            raise ConfigError(
                f"batch_size: {batch_size} is larger than the training set ({len(labels)} samples); "
                "lower batch_size or check data.path"
            )
        if len(labels) < batch_size * int(grad_accum):  # else 0 steps per epoch: a run that trains nothing
            raise ConfigError(
                f"grad_accum: {grad_accum} micro-batches of batch_size {batch_size} ({batch_size * grad_accum} "
                f"samples) are more than the training set ({len(labels)} samples); lower grad_accum or batch_size"
            )
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_to_indices = class_to_indices
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.cd = cd
        self.scores = scores
        if cd is not None:
            if scores is None:
                raise ValueError("CD sampling needs the difficulty scores")  # a caller's bug, not a config value
            self.miner = EasyHardMiner(num_easy=cd.num_easy, num_hard=cd.num_hard, widen_step=cd.widen_step)
        self.grad_accum = int(grad_accum)
        self.steps_per_epoch = len(self.labels) // batch_size // self.grad_accum  # optimizer steps
        self.micro_per_epoch = self.steps_per_epoch * self.grad_accum
        self.epoch = 0
        self.start_batch = 0
        self._drawn: dict[int, tuple[list[int], CDPlan | None]] = {}
        self._replay: dict[int, tuple[list[int], CDPlan | None]] = {}

    def __len__(self) -> int:
        """Micro-batches left in the epoch."""
        return self.micro_per_epoch - self.start_batch * self.grad_accum

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Start ``epoch`` at optimizer step ``start_batch`` of it."""
        self.epoch = epoch
        self.start_batch = start_batch

    def is_cd_step(self, step: int) -> bool:
        return self.cd is not None and step % self.cd.interval == 0

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))
        for b in range(self.start_batch * self.grad_accum, self.micro_per_epoch):
            micro = self.epoch * self.micro_per_epoch + b  # the key of drawn batches (= the step without accumulation)
            step, part = divmod(micro, self.grad_accum)
            if micro in self._replay:
                batch, plan = self._replay.pop(micro)
            else:
                global_batch = order[b * self.batch_size : (b + 1) * self.batch_size]
                lo = self.rank * self.local_batch
                batch = global_batch[lo : lo + self.local_batch].tolist()
                plan = None
                if self.is_cd_step(step) and part == self.grad_accum - 1:
                    extra, plan = self._draw_cd(global_batch, step)
                    batch = batch + extra  # (no CD samples when the batch has fewer classes than ranks)
            self._drawn[micro] = (batch, plan)
            yield batch

    def _draw_cd(self, global_batch: np.ndarray, step: int) -> tuple[list[int], CDPlan | None]:
        assert self.cd is not None and self.scores is not None
        rng = np.random.default_rng([self.seed, step, 0xCD])
        batch_labels = self.labels[global_batch]
        distinct = np.unique(batch_labels)
        per_rank = min(self.cd.num_classes, len(distinct)) // self.world_size
        if per_rank == 0:  # every rank computes the same: all skip the CD loss of this step
            return [], None
        classes = rng.choice(distinct, size=per_rank * self.world_size, replace=False)
        # The last batch sample of each class supplies its logits row (as the reference picks it).
        row_pos = last_row_of_class(torch.from_numpy(batch_labels), torch.from_numpy(classes)).numpy()
        scores = self.scores()
        threshold = score_threshold(scores, p=self.cd.percentile, max_samples=self.cd.threshold_samples, rng=rng)
        lo, hi = self.rank * per_rank, (self.rank + 1) * per_rank
        easy, hard = self.miner(scores, self.class_to_indices, classes[lo:hi], threshold, rng)
        extra = np.concatenate([easy, hard], axis=1).reshape(-1).tolist()
        plan = CDPlan(
            classes=classes,
            owner_rank=row_pos // self.local_batch,
            owner_row=row_pos % self.local_batch,
            local_classes=classes[lo:hi],
            local_slice=(lo, hi),
            threshold=float(threshold),
        )
        return extra, plan

    def take_plan(self, step: int) -> CDPlan | None:
        """Called by the trainer when it trains optimizer step `step`: returns its plan (on its last
        micro-batch) and forgets older draws."""
        last = (step + 1) * self.grad_accum - 1
        entry = self._drawn.get(last)
        for old in [s for s in self._drawn if s <= last]:
            del self._drawn[old]
        return entry[1] if entry else None

    def state_dict(self) -> dict:
        """The batches drawn ahead of the trained step (plus their plans), as tensors for weights_only loads."""
        pending = {}
        for step, (batch, plan) in self._drawn.items():
            entry = {"batch": torch.tensor(batch, dtype=torch.int64)}
            if plan is not None:
                entry.update(
                    classes=torch.from_numpy(plan.classes.astype(np.int64)),
                    owner_rank=torch.from_numpy(plan.owner_rank.astype(np.int64)),
                    owner_row=torch.from_numpy(plan.owner_row.astype(np.int64)),
                    local_slice=torch.tensor(plan.local_slice, dtype=torch.int64),
                    threshold=torch.tensor(plan.threshold, dtype=torch.float64),
                )
            pending[str(step)] = entry
        return {"pending": pending, "world_size": self.world_size, "grad_accum": self.grad_accum}

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("world_size", self.world_size)) != self.world_size:
            return  # a different world size draws anew; the pending batches were split for other ranks
        if int(state.get("grad_accum", 1)) != self.grad_accum:
            return  # keyed by micro-batch: another accumulation draws anew
        self._replay = {}
        for key, entry in state.get("pending", {}).items():
            plan = None
            if "classes" in entry:
                lo, hi = (int(v) for v in entry["local_slice"])
                classes = entry["classes"].numpy()
                plan = CDPlan(
                    classes=classes,
                    owner_rank=entry["owner_rank"].numpy(),
                    owner_row=entry["owner_row"].numpy(),
                    local_classes=classes[lo:hi],
                    local_slice=(lo, hi),
                    threshold=float(entry["threshold"]),
                )
            self._replay[int(key)] = (entry["batch"].tolist(), plan)
