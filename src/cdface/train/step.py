"""One training step: forward, margin loss, the CD branch, backward, clipping, optimizer, difficulty scores.

``fit()`` calls ``TrainStep`` once per optimizer step with its collaborators passed in; the training
benchmarks (benchmarks/train_throughput.py, benchmarks/gpu_suite.py) call the same object, so a change to
the step is measured where it is made.

One head contract: the head (replicated ``MarginHead``, or ``ShardedMarginHead`` whose centres are split
over the ranks) returns ``HeadOutput`` with the loss of this rank's rows, and mines the CD hard-negative
centres with ``head.hard_negatives``: the step reads the same for 1 process or 64.

Gradient accumulation (``grad_accum: N``): a step trains N micro-batches of ``batch_size`` (global) each;
each margin loss is divided by N, so the update equals one batch of N * batch_size (BatchNorm statistics
excepted: they are per micro-batch). DDP all-reduces once, on the last backward (``no_sync`` on the
others). The CD samples belong to the step's last micro-batch: its K classes are drawn from that
micro-batch, and the CD loss is added once per optimizer step with the weights WC, WD as without
accumulation. ``cd.interval`` counts optimizer steps.

No host read in a steady-state step: the finite checks stay on the device as flags; a step whose loss is
not finite (on any rank) is skipped without a trace (no parameter, buffer, moment or step counter changes; see
train/bad_step.py, which owns the skip); the score bank and the health sums take the flag as a mask.
``BadSteps.read()`` is the one host read, done by ``fit`` at logging, checkpoint and epoch-end steps. An
optimizer that cannot run fused falls back to reading the flag every step (logged once), and every optimizer
reads it until it has applied its first step.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from cdface.config import TrainConfig
from cdface.losses import ClosenessDiversityLoss
from cdface.parallel import ShardedMarginHead
from cdface.precision import autocast
from cdface.train.bad_step import BadSteps, OptimizerStep, RunningBuffers
from cdface.train.cd_sampler import CDPlan
from cdface.train.distributed import DistInfo, all_gather_cat, all_reduce_sum
from cdface.train.health import TrainingHealth
from cdface.train.score_bank import ScoreBank

log = logging.getLogger("cdface.train")


@dataclass
class MicroBatch:
    """One micro-batch on the device. images: (B_local [+ K_local*(NE+NH) CD rows], 3, H, W), the model's
    input; labels, indices: (B_local,) class ids and dataset indices; plan: the CD plan (last micro-batch of
    a CD step only)."""

    images: Tensor
    labels: Tensor
    indices: Tensor
    plan: CDPlan | None = None


def to_micro_batch(
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    local_batch: int,
    device: torch.device,
    preprocess: Callable[[Tensor], Tensor],
    channels_last: bool = False,
) -> MicroBatch:
    """A loader batch as the step takes it: on ``device``, through the model's input contract ``preprocess``
    (uint8 RGB crops in), channels-last when asked; labels and indices of the first ``local_batch`` rows (the
    CD rows after them are the sampler's, known by the plan). The plan is the caller's to set."""
    images = preprocess(images.to(device, non_blocking=True))
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return MicroBatch(
        images,
        labels[:local_batch].to(device, non_blocking=True),
        indices[:local_batch].to(device, non_blocking=True),
    )


def to_device(array: np.ndarray, device: torch.device) -> Tensor:
    """A host array on ``device`` without waiting (pinned, non-blocking on a GPU)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class TrainStep:
    """``step(micro_batches, step_index) -> margin loss`` (a detached device scalar, the micro-batches' mean).

    Collaborators: ``model`` (the backbone, maybe DDP-wrapped and compiled), ``head`` (replicated, maybe
    DDP-wrapped, or sharded), the DDP wrappers for ``no_sync`` (``ddp_modules``), optimizer, LR scheduler,
    gradient scaler, score bank, CD loss, health sums and bad-step account. ``fault_hook(step, loss)``
    (tests) may replace the margin loss.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        info: DistInfo,
        device: torch.device,
        model: nn.Module,
        head: nn.Module,
        ddp_modules: Sequence[nn.Module],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        scores: ScoreBank,
        cd_loss: ClosenessDiversityLoss,
        health: TrainingHealth,
        bad_steps: BadSteps,
        local_batch: int,
        fault_hook: Callable[[int, Tensor], Tensor] | None = None,
    ) -> None:
        self.cfg, self.info, self.device = cfg, info, device
        self.model, self.head = model, head
        self.head_module = head.module if isinstance(head, nn.parallel.DistributedDataParallel) else head
        self.sharded = isinstance(self.head_module, ShardedMarginHead)
        self.ddp_modules = list(ddp_modules)
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.scores, self.cd_loss, self.health, self.bad_steps = scores, cd_loss, health, bad_steps
        self.local_batch = local_batch
        self.fault_hook = fault_hook
        self.optimizer_step = OptimizerStep(optimizer, scaler)
        if not self.optimizer_step.fused and info.is_main:
            log.info("the optimizer is not fused: a non-finite step is detected with one host read per step")
        self.last_threshold: float | None = None

    def _no_sync(self, modules: Sequence[nn.Module]) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        for module in modules:
            stack.enter_context(module.no_sync())
        return stack

    def __call__(self, micro_batches: Sequence[MicroBatch], step: int) -> Tensor:
        cfg, n, count = self.cfg, self.local_batch, len(micro_batches)
        # running statistics the forward updates (BatchNorm, a margin's running t/norm): put back on a bad step
        buffers = RunningBuffers((self.model, self.head_module))
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        losses, correct, target_cosines, indices = [], [], [], []
        cd_terms = None
        for i, batch in enumerate(micro_batches):
            last = i == count - 1
            # DDP all-reduces in the backward of a forward run outside no_sync: only the step's last one. On a
            # CD step the backbone's last backward is the CD loss's (the head's is the margin loss's).
            waiting = self.ddp_modules if not last else self.ddp_modules[:1] if batch.plan is not None else []
            with self._no_sync(waiting):
                with autocast(cfg.precision, self.device):
                    embeddings = self.model(batch.images[:n])
                embeddings = embeddings.float()
                out = self.head(embeddings, batch.labels)
                loss = out.loss
                if self.fault_hook is not None:
                    loss = self.fault_hook(step, loss)
                bad = bad | ~torch.isfinite(loss)
                if batch.plan is not None:
                    centres, mask = self._hard_negatives(embeddings.detach(), batch.plan)
                self.scaler.scale(loss / count).backward()
            losses.append(loss.detach())
            correct.append(out.correct)
            target_cosines.append(out.target_cosine)
            indices.append(batch.indices)
            if batch.plan is not None:
                cd_terms = self._cd_backward(batch, centres, mask)
                bad = bad | ~torch.isfinite(cd_terms[0])
                self.last_threshold = batch.plan.threshold
        if self.info.enabled:  # every rank skips when one saw a non-finite loss
            flag = bad.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            bad = flag > 0

        clip = None
        if cfg.optim.grad_clip > 0:
            sharded_head = self.head_module if self.sharded else None
            clip = functools.partial(clip_gradients, self.optimizer, cfg.optim.grad_clip, sharded_head, self.info)
        self.optimizer_step.step(bad, clip)  # changes nothing when bad (see train/bad_step.py)
        buffers.restore(bad)  # device-side: a skipped step leaves no trace in the running statistics either
        # a finite loss can still overflow the weights: a bad step too (and never checkpointed, see fit's save)
        bad = bad | self._weights_not_finite([b for b in buffers.buffers if b.is_floating_point()])
        good = ~bad
        self.bad_steps.record(bad, step + 1)  # numbered as the log and the checkpoints number it: steps done
        loss = torch.stack(losses).mean()
        self.health.update(loss, torch.cat(correct), torch.cat(target_cosines), apply=good)
        if cd_terms is not None:
            self.health.update_cd(*cd_terms, apply=good)
        self._update_scores(torch.cat(indices), torch.cat(target_cosines), good, step)
        self.scheduler.step()
        return loss

    def _hard_negatives(self, embeddings: Tensor, plan: CDPlan) -> tuple[Tensor, Tensor]:
        """This rank's CD centres (and mask): each selected class is queried by its chosen batch row, on the
        rank that holds it; the head's one miner shares the result (replicated or sharded centres alike)."""
        rank_of = plan.owner_rank
        mine = np.flatnonzero(rank_of == self.info.rank)
        found = self.head_module.hard_negatives(
            embeddings[to_device(plan.owner_row[mine], self.device)],
            to_device(plan.classes[mine], self.device),
            self.cfg.cd.num_negatives,
            per_class=self.cfg.cd.per_class_centres,
            all_ranks=True,
            counts=np.bincount(rank_of, minlength=self.info.world_size).tolist(),
        )
        if not self.cfg.cd.per_class_centres:
            return found.centres, found.mask
        # rows come in rank order of the owners; this rank's CD classes are plan.classes[lo:hi]
        order = np.argsort(np.concatenate([np.flatnonzero(rank_of == r) for r in range(self.info.world_size)]))
        lo, hi = plan.local_slice
        rows = to_device(order[lo:hi], self.device)
        return found.centres[rows], found.mask[rows]

    def _cd_backward(self, batch: MicroBatch, centres: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Closeness & diversity on the appended easy/hard rows; returns (weighted loss, closeness, diversity)."""
        cd = self.cfg.cd
        with autocast(self.cfg.precision, self.device):
            cd_embeddings = self.model(batch.images[self.local_batch :])
        assert batch.plan is not None
        cd_embeddings = cd_embeddings.float().view(len(batch.plan.local_classes), cd.num_easy + cd.num_hard, -1)
        easy, hard = cd_embeddings[:, : cd.num_easy], cd_embeddings[:, cd.num_easy :]
        close, diverse = self.cd_loss.components(easy, hard, centres.float(), mask)
        value = self.cd_loss.weighted(close, diverse)
        self.scaler.scale(value).backward()
        return value.detach(), close.detach(), diverse.detach()

    def _weights_not_finite(self, buffers: list[Tensor]) -> Tensor:
        """Device flag: a parameter or one of the floating-point ``buffers`` (the step's running statistics)
        holds a non-finite value."""
        params = [p for module in (self.model, self.head_module) for p in module.parameters() if p.is_floating_point()]
        tensors = [t.detach() for t in (*params, *buffers)]
        norms = torch._foreach_norm(tensors)  # one fused pass; a non-finite value makes its norm non-finite
        flag = ~torch.isfinite(torch.stack([norm.float() for norm in norms])).all()
        if self.info.enabled and self.sharded:  # each rank holds other centres
            flag = all_reduce_sum(flag.to(torch.int32), self.info) > 0
        return flag

    def _update_scores(self, indices: Tensor, target_cosine: Tensor, good: Tensor, step: int) -> None:
        """Difficulty scores: every rank applies every rank's updates, so all ranks hold one view."""
        if self.cfg.scores.sync == "gather":
            indices, target_cosine = all_gather_cat(indices, self.info), all_gather_cat(target_cosine, self.info)
        self.scores.update(indices, target_cosine, apply=good)
        if self.cfg.scores.sync != "gather" and self.info.enabled and (step + 1) % self.cfg.scores.average_every == 0:
            self.scores.sync()
        self.scores.publish()


def clip_gradients(
    optimizer: torch.optim.Optimizer, max_norm: float, sharded_head: ShardedMarginHead | None, info: DistInfo
) -> None:
    """Clip by the global gradient norm. A sharded head's rows live on different ranks, so their squared
    norm is summed over the ranks: every rank then applies the same factor and the replicas stay equal."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if sharded_head is None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    shard = [p for p in params if p is sharded_head.weight]
    replicated = [p for p in params if p is not sharded_head.weight]
    device = params[0].grad.device
    shard_sq = sum((p.grad.float().pow(2).sum() for p in shard), torch.zeros((), device=device))
    total_sq = all_reduce_sum(shard_sq, info) + sum(
        (p.grad.float().pow(2).sum() for p in replicated), torch.zeros((), device=device)
    )
    factor = torch.clamp(max_norm / (total_sq.sqrt() + 1e-6), max=1.0)
    for p in params:
        p.grad.mul_(factor.to(p.grad.dtype))


__all__ = ["MicroBatch", "TrainStep", "clip_gradients", "to_device", "to_micro_batch"]
